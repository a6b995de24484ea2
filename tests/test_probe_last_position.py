"""The causality probe compares the last position of a row too: a share of its rows is kept
whole (cut = T), still beside rows of other batches, so a model that reads another row or
state left by earlier batches only where no cut in 1..T-1 ever looks is caught."""
import numpy as np

from harness import probe
from tests.test_probe import B, CHUNKS, T, V, Model, lp, run_probe


class LastOnly(Model):
    """Causal everywhere but at the last position, where it reads another row of its batch
    (`row`) or a count of the batches it has seen (`state`)."""

    def __init__(self, how: str):
        super().__init__()
        self.how, self.calls = how, 0

    def forward(self, idx):
        logits = super().forward(idx).clone()
        if self.how == "row":
            logits[:, -1] += 3.0 * self.table[idx.roll(1, dims=0)[:, -1]]
        else:  # the scored runner saw batches before this one; a fresh probe runner has not
            logits[:, -1] += 0.5 * self.calls * self.table[0]  # not a constant: log_softmax would drop it
            self.calls += 1
        return logits


def test_a_share_of_rows_is_kept_whole_and_compared_at_every_position():
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, size=(B * CHUNKS, T)).astype(np.int32)
    cuts = np.concatenate([b.cuts for b in probe.make(x, B, 500, np.arange(V), rng)])
    whole = cuts == T
    assert abs(whole.mean() - probe.WHOLE_SHARE) < 0.02  # 2000 rows: 4 standard errors
    assert ((cuts >= 1) & (cuts <= T)).all() and len(set(cuts[~whole])) == T - 1  # the others: every cut
    b = probe.make(x, B, 1, np.arange(V), np.random.default_rng(3))[0]
    b.cuts[:] = T
    scored = np.zeros((B * CHUNKS, T), np.float32)
    probe_lp = np.zeros((B, T), np.float32)
    probe_lp[:, -1] = 1.0  # only the last position moved
    w = probe.compare(scored, probe_lp, b)
    assert w.compared == B * T and w.diff == 1.0 and w.pos == T - 1 and w.cut == T


def test_reading_another_row_at_the_last_position_only_is_caught():
    w = run_probe(LastOnly("row"), n_batches=8)  # 32 rows: all cut with probability (7/8)^32 = 1.4%
    assert w.diff > 0.1 and w.pos == T - 1 and w.cut == T


def probe_fresh(model, n_batches=8, seed=1) -> probe.Worst:
    """run_probe, with the model's state reset between the scored pass and the probe, as a
    fresh runner process has it."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, V, size=(B * CHUNKS, T + 1))
    x, y = rows[:, :-1].astype(np.int32), rows[:, 1:]
    scored = np.concatenate([lp(model, x[i:i + B], y[i:i + B]) for i in range(0, len(x), B)])
    model.calls = 0
    batches = probe.make(x, B, n_batches, np.arange(V), rng)
    return max((probe.compare(scored, lp(model, b.ids, y[b.rows]), b) for b in batches), key=lambda w: w.diff)


def test_state_left_by_earlier_batches_at_the_last_position_only_is_caught():
    w = probe_fresh(LastOnly("state"))
    assert w.diff > 0.1 and w.pos == T - 1 and w.cut == T


def test_the_same_cheats_pass_a_probe_that_never_keeps_a_row_whole(monkeypatch):
    """Control: with no whole rows (the probe before) the last position is never compared."""
    monkeypatch.setattr(probe, "WHOLE_SHARE", 0.0)
    assert run_probe(LastOnly("row"), n_batches=8).diff == 0.0
    assert probe_fresh(LastOnly("state")).diff == 0.0
