"""The feed's warm-up and clock (harness/feed.py), driven from this process through its
socket and shared buffer with train.py's own client (trainer/feed.py): no experiment,
no sandbox. At most budget.warmup_tokens are served before the clock, all of them random
rows that say nothing of the data set; the clock starts before the batch that would go
past them is served, or when the start-up allowance runs out."""
import os
import time
from itertools import islice

import numpy as np
import pytest

from harness.budget import Budget
from harness.feed import Feed
from trainer import feed as wire

T = 64  # tokens per row asked for (a quarter of the builtin MAX_SEQ_LEN: small, fast batches)
B = 4  # rows per batch: B * T = 256 tokens per request


@pytest.fixture(scope="module")
def data(cache_dir):
    from harness import workdir
    from trainer import prepare

    return workdir.absolute_data(prepare.DATA)


@pytest.fixture(scope="module")
def split_rows(data):
    """The training split's first packed rows at length T: what the feed must serve first once timed."""
    from trainer import prepare

    return np.stack([r for r, _ in islice(prepare.packed_rows("train", T, data), 64)])


@pytest.fixture(scope="module")
def ordinary(data):
    """(BOS id, bool mask over the vocabulary of tokens with bytes in the merge table)."""
    from trainer import prepare

    tok = prepare.Tokenizer.from_directory(prepare.tokenizer_dir(data))
    return tok.get_bos_token_id(), prepare.token_bytes_of(data) > 0


class Harness:
    """A started Feed and a client on its far end, as train.py would hold it."""

    def __init__(self, data, *, warmup, allowance=60.0, budget=None, grace=1.0, requests_per_step=1):
        self.feed = Feed(data, budget or Budget("wall", 30.0), warmup_tokens=warmup, allowance=allowance, grace=grace,
                         requests_per_step=requests_per_step)
        sock_fd, shm_fd = self.feed.child_fds()
        # the child's ends, duplicated: start() closes the feed's copy as it does after a spawn
        self.client = wire.Client(os.dup(sock_fd), os.dup(shm_fd), self.feed.shm_bytes)
        self.t_spawn = time.monotonic()
        self.feed.start(self.t_spawn)

    def batch(self, rows=B, seq_len=T):
        """(rows, epoch, reply, monotonic time just before asking); rows None when exhausted."""
        t_ask = time.monotonic()
        got = self.client.batch(rows, seq_len)
        rows_, epoch = got if got is not None else (None, None)
        return rows_, epoch, self.client.last, t_ask

    def close(self):
        self.client.sock.close()
        self.feed.close()


@pytest.fixture()
def harness(data):
    made = []

    def make(**kw):
        made.append(Harness(data, **kw))
        return made[-1]

    yield make
    for h in made:
        h.close()


@pytest.mark.parametrize("warmup,n_warm", [(3 * B * T, 3), (3 * B * T - 1, 2)])
def test_warmup_is_bounded_in_tokens_and_the_clock_starts_before_the_next_batch(harness, split_rows, warmup, n_warm):
    """768 tokens: three 256-token batches exactly reach it and are all warm-up; 767: the
    third would go past it, so it starts the clock and is the first timed batch."""
    h = harness(warmup=warmup)
    for i in range(n_warm):
        _, epoch, reply, _ = h.batch()
        assert reply.status == wire.OK and reply.training_seconds == 0.0 and epoch == 1
        assert h.feed.clock_start() is None and h.feed.warmup_served == (i + 1) * B * T
    rows, epoch, reply, t_ask = h.batch()
    f = h.feed
    assert f.warmup_served == n_warm * B * T <= warmup  # never more than the warm-up before the clock
    assert t_ask <= f.t_warm == f.clock_start() <= reply.received  # started by this request, before its reply
    assert reply.training_seconds > 0 and f.timed_tokens == B * T and f.tokens == (n_warm + 1) * B * T
    np.testing.assert_array_equal(rows, split_rows[:B])  # the split did not advance during warm-up
    rows, _, _, _ = h.batch()
    np.testing.assert_array_equal(rows, split_rows[B:2 * B])
    assert f.timed_tokens == 2 * B * T and f.batches == n_warm + 2


def test_a_first_request_bigger_than_the_warmup_is_timed_whole(harness, split_rows):
    h = harness(warmup=1000)
    rows, epoch, reply, t_ask = h.batch(rows=16)  # 16 x 64 = 1024 tokens > 1000
    f = h.feed
    assert t_ask <= f.t_warm == f.clock_start() <= reply.received
    assert f.warmup_served == 0 and f.timed_tokens == f.tokens == 16 * T
    np.testing.assert_array_equal(rows, split_rows[:16])


def test_warmup_rows_are_bos_then_random_ordinary_tokens_not_the_split(harness, split_rows, ordinary):
    bos, is_ordinary = ordinary
    warm = []
    for _ in range(2):  # two runs: the same rows (reruns are identical)
        h = harness(warmup=64 * T)
        warm.append(np.concatenate([h.batch(rows=16)[0] for _ in range(4)]))  # 64 rows, all warm-up
        assert h.feed.clock_start() is None and h.feed.warmup_served == 64 * T
    for rows in warm:
        assert rows.dtype == np.int32 and rows.shape == (64, T + 1)
        assert (rows[:, 0] == bos).all() and is_ordinary[rows[:, 1:]].all()  # no BOS, EOS or reserved after it
        split = {r.tobytes() for r in split_rows.astype(np.int32)}
        assert not split & {r.tobytes() for r in rows}
        # uniform over ~4,000 ordinary tokens: 4,096 draws hit ~2,600 distinct ones; text far fewer
        assert len(np.unique(rows[:, 1:])) > 2000 > len(np.unique(split_rows))
    np.testing.assert_array_equal(warm[0], warm[1])  # a fixed seed: a rerun trains on the same rows


def test_the_clock_starts_when_the_allowance_runs_out(harness, split_rows):
    """Half the warm-up served, then the allowance expires: the next batch is timed and is
    the split's first rows; the clock started at spawn + allowance, not at that request."""
    allowance = 3.0  # seconds: long enough to ask once on a loaded machine
    h = harness(warmup=8 * B * T, allowance=allowance)
    _, _, reply, _ = h.batch()
    assert h.feed.clock_start(reply.received) is None and h.feed.warmup_served == B * T
    time.sleep(max(0.0, h.t_spawn + allowance - time.monotonic()) + 0.2)
    assert h.feed.clock_start() == pytest.approx(h.t_spawn + allowance, abs=1e-9)  # started without a request
    rows, _, reply, _ = h.batch()
    f = h.feed
    assert f.t_warm is None and reply.training_seconds >= 0.2 and f.timed_tokens == B * T
    assert f.warmup_served == B * T  # no more warm-up once the clock runs, however little was used
    np.testing.assert_array_equal(rows, split_rows[:B])


def test_warmup_tokens_count_against_a_token_budget(harness, split_rows):
    """Tokens mode: the warm-up's 768 tokens and the timed 256 make the 1,024 of the
    budget; the next request is not served."""
    h = harness(warmup=3 * B * T, budget=Budget("tokens", 30.0, tokens=4 * B * T))
    for _ in range(3):
        assert h.batch()[2].progress == pytest.approx(h.feed.tokens / (4 * B * T))
    rows, _, reply, _ = h.batch()
    np.testing.assert_array_equal(rows, split_rows[:B])
    assert reply.progress == pytest.approx(1.0)
    rows, _, reply, _ = h.batch()
    assert rows is None and reply.status == wire.EXHAUSTED
    assert h.feed.tokens == 4 * B * T and h.feed.timed_tokens == B * T


def test_no_warmup_times_the_first_batch(harness, split_rows):
    h = harness(warmup=0)
    rows, _, reply, t_ask = h.batch()
    assert t_ask <= h.feed.t_warm <= reply.received and h.feed.warmup_served == 0
    np.testing.assert_array_equal(rows, split_rows[:B])
