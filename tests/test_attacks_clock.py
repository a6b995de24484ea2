"""The adversarial suite's warm-up attacks (issue 18, "no compute off the clock"): compute
before the training clock must buy no training. Before the clock the feed serves at most
budget.warmup_tokens, all of them random rows; the batch that would go past them starts
the clock before it is served. Planted train.py code: tests/attacks_clock.py."""
import base64
from itertools import takewhile

import numpy as np
import pytest

from tests import attacks_clock, fakes
from tests.conftest import experiment

pytestmark = pytest.mark.slow
WARMUP = 2 * 2048  # tokens: model=tiny's default budget.warmup_tokens (two optimizer steps of 8 x 256)


@pytest.fixture(scope="module")
def split(cache_dir):
    """Every row of the training split's first epoch at MAX_SEQ_LEN, as the feed packs them
    (5,506 rows of 257 tokens for the builtin corpus), as a set of row bytes."""
    from harness import workdir
    from trainer import prepare

    data = workdir.absolute_data(prepare.DATA)
    first_epoch = takewhile(lambda row: row[1] == 1, prepare.packed_rows("train", prepare.MAX_SEQ_LEN, data))
    out = {np.asarray(r, dtype=np.int32).tobytes() for r, _ in first_epoch}
    assert len(out) > 5000  # the whole epoch, not an empty set a dump would trivially miss
    return out


def _logged(run_dir, tag: str) -> list[str]:
    return [line[len(tag) + 1:] for line in (run_dir / "train.log").read_text().splitlines()
            if line.startswith(tag + " ")]


def test_steps_on_the_warmup_batches_learn_nothing_of_the_data(split, tmp_path):
    """52 optimizer steps on the warm-up batches, all before the clock: what it trained on
    is 16 random rows (BOS, then ordinary tokens), none of them a row of the split."""
    from trainer import prepare

    run = tmp_path / "run"
    res, s = experiment(run, fakes.write(tmp_path / "t.py", steps=0, before_eval=attacks_clock.TRAIN_ON_WARMUP))
    assert s["status"] == "ok", s
    # the harness's own figures: exactly the warm-up served before the clock, the rest timed
    assert s["warmup_tokens"] == s["warmup_tokens_served"] == WARMUP
    assert s["timed_tokens"] == s["total_tokens"] - WARMUP > 0
    assert s["startup_seconds"] < s["allowance_seconds"]  # the clock was started by a request, not the allowance
    assert _logged(run, "WARMUP_BATCH") == ["clock 0.0"] * 4  # every one of them served before the clock
    [steps] = _logged(run, "WARMUP_STEPS")
    assert steps.startswith("52 clock 0.0 ")  # ... and trained on 52 times before it started
    [dump] = _logged(run, "WARMUP_ROWS")
    shape, blob = dump.split()
    rows = np.frombuffer(base64.b64decode(blob), dtype=np.int32).reshape([int(n) for n in shape.split(",")])
    assert rows.shape == (16, prepare.MAX_SEQ_LEN + 1)
    tok = prepare.Tokenizer.from_directory()
    ordinary = prepare.token_bytes_of() > 0
    assert (rows[:, 0] == tok.get_bos_token_id()).all() and ordinary[rows[:, 1:]].all()
    assert not split & {r.tobytes() for r in rows}
    # uniform draws: 4,096 tokens over ~4,000 ordinary ones hit ~2,600 distinct; text ~1,200
    assert len(np.unique(rows[:, 1:])) > 2000


def test_a_huge_first_request_is_timed_whole(cache_dir, tmp_path):
    """One request of 16,384 tokens, four times the warm-up: it starts the clock before it
    is served, so everything trained on it is timed, and the run stops on the budget."""
    from trainer import prepare

    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", steps=0,
                                                      before_eval=attacks_clock.HUGE_FIRST_BATCH))
    assert s["status"] == "ok", s
    assert s["num_steps"] == 1 and s["total_tokens"] == 64 * prepare.MAX_SEQ_LEN > s["warmup_tokens"]
    assert s["timed_tokens"] == s["total_tokens"] and s["warmup_tokens_served"] == 0
    # the budget is 5 s (conftest.FAST); the clock started at the request, well inside the
    # 30 s allowance, and ran through every step trained on that batch
    assert s["startup_seconds"] < s["allowance_seconds"]
    assert 5.0 <= s["training_seconds"] < 5.0 + 5.0
    [steps] = _logged(tmp_path / "run", "HUGE_STEPS")
    assert int(steps) > 0
