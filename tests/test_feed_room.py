"""The feed's deadline (harness/feed.py): room past the budget for the run's last step
and its handover, 1.5 x its slowest step (a step: requests_per_step consecutive batch
requests) + grace, frozen when the budget runs out, at least the grace, at most the
budget again. Driven through the feed's socket with train.py's client, no experiment."""
import time

import pytest

from harness.budget import Budget
from tests.test_feed_clock import data, harness, split_rows  # noqa: F401  (fixtures)

STEP = 0.15  # seconds between batch requests: one micro-batch


def steps(h, n, gap=STEP):
    for _ in range(n):
        time.sleep(gap)
        rows, _, reply, _ = h.batch()
        assert rows is not None


def test_the_room_is_one_and_a_half_slowest_steps_of_micro_batches_plus_grace(harness):
    h = harness(warmup=0, budget=Budget("wall", 3.0), grace=0.2, requests_per_step=2)
    h.batch()  # starts the clock
    steps(h, 4)
    steps(h, 2, gap=2 * STEP)  # one slower step: two micro-batches of 0.3 s
    f = h.feed
    assert f.slowest_step >= 4 * STEP  # two gaps of the slow step (one gap is 2 x STEP)
    assert f.room() == pytest.approx(1.5 * f.slowest_step + 0.2)
    assert f.seconds_limit() == pytest.approx(3.0 + f.room())


def test_steps_after_the_budget_ran_out_do_not_widen_the_room(harness):
    h = harness(warmup=0, budget=Budget("wall", 1.5), grace=0.1)
    h.batch()
    steps(h, 3)
    before = h.feed.slowest_step
    time.sleep(1.5)  # the budget runs out meanwhile
    steps(h, 1, gap=0.5)  # a long "step" that ends past the budget: the room stays the run's own
    assert h.feed.slowest_step == before and h.feed.room() == pytest.approx(min(1.5 * before + 0.1, 1.5))


def test_without_a_whole_step_the_room_is_the_budget_and_never_more(harness):
    h = harness(warmup=0, budget=Budget("wall", 0.5), grace=0.1, requests_per_step=8)
    h.batch()
    steps(h, 2)  # 3 requests: not one whole step of 8
    assert h.feed.slowest_step == 0.0 and h.feed.room() == pytest.approx(0.5)
    slow = harness(warmup=0, budget=Budget("wall", 0.5), grace=0.1)
    slow.batch()
    steps(slow, 1, gap=0.4)  # one step of 0.4 s: 1.5 x 0.4 + 0.1 = 0.7, capped at the budget
    assert slow.feed.room() == pytest.approx(0.5)


def test_the_grace_is_the_least_room(harness):
    h = harness(warmup=0, budget=Budget("wall", 30.0), grace=2.0)
    h.batch()
    steps(h, 2, gap=0.05)
    assert h.feed.room() == pytest.approx(max(2.0, 1.5 * h.feed.slowest_step + 2.0))
    assert h.feed.room() >= 2.0


def test_overshoot_is_what_a_time_budget_ran_past(harness):
    h = harness(warmup=0, budget=Budget("wall", 0.3), grace=0.1)
    h.batch()
    steps(h, 3)  # 0.45 s of training
    f = h.feed
    f.t_handover = time.monotonic()
    assert f.overshoot() == pytest.approx(f.training_seconds() - 0.3) and f.overshoot() > 0.1
    t = harness(warmup=0, budget=Budget("tokens", 1.0, tokens=10_000), grace=0.1)
    t.batch()
    assert t.feed.overshoot() == 0.0
