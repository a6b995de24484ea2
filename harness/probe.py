"""The causality probe: inputs that tell a model that reads the future from one that doesn't.

A causal language model's log-probability of the token after position t depends on
tokens 0..t of its own row only. So: take scored rows, keep each one's prefix up to a
random cut, replace everything from the cut on with random tokens, put rows from
different scored batches side by side (each at the index it had when scored, so the
arithmetic is the same), run them in a fresh process that never saw the scored inputs,
and compare the log-probabilities of the real targets before each cut with the scored
ones. Anything that moved read a token it should not have: the future of its row, other
rows of its batch, or state left behind by earlier batches. A share of the rows
(WHOLE_SHARE) is kept whole (cut = T: nothing replaced, every position compared, the
rows beside it still from other batches), so the last positions, which a cut in 1..T-1
compares rarely (position t in a share (T-1-t)/(T-1) of rows) or never (t = T-1), are
compared too: a model that reads other rows or old state only there is caught.

    batches = make(scored_ids, batch_rows=8, n_batches=8, pool=normal_token_ids, rng=rng)
    worst = compare(scored_lp, probe_lp, batches[0])

What this catches and what it cannot: a model that reads ahead at every position is
caught in every cut row; one that reads the next token at a random fraction p of
positions passes k probed rows with probability about (1 - (1 - WHOLE_SHARE) p)^k (a
whole row has no future to replace; the README gives the figure); one that reads another
row or old state at one position only, the last included, passes with at most
(1 - WHOLE_SHARE)^k.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WHOLE_SHARE = 1 / 8  # rows kept whole, on average: 8 of 64 (none of 64: (7/8)^64 = 0.02%)


@dataclass
class ProbeBatch:
    ids: np.ndarray  # int32 (B, T): what the probe runner sees
    rows: np.ndarray  # (B,) the scored row each probe row copies (its prefix)
    cuts: np.ndarray  # (B,) first replaced position, in 1..T (T: none): positions < cut are compared


@dataclass
class Worst:
    diff: float  # largest |change| in a compared log-probability (nats); nan if any was nan
    row: int  # scored row
    pos: int  # position in it
    cut: int  # where that probe row's replaced suffix began
    compared: int  # positions compared in this batch


def make(scored_ids: np.ndarray, batch_rows: int, n_batches: int, pool: np.ndarray,
         rng: np.random.Generator) -> list[ProbeBatch]:
    """Probe batches of `batch_rows` rows from scored inputs (N, T), N a multiple of
    batch_rows (row r was scored in batch r // batch_rows at index r % batch_rows)."""
    n, T = scored_ids.shape
    if n % batch_rows or T < 2:
        raise ValueError(f"{n} scored rows of {T} tokens do not form batches of {batch_rows}")
    chunks = n // batch_rows
    out = []
    for _ in range(n_batches):
        chunk = rng.choice(chunks, size=batch_rows, replace=chunks < batch_rows)
        rows = chunk * batch_rows + np.arange(batch_rows)  # same index within the batch as when scored
        cuts = np.where(rng.random(batch_rows) < WHOLE_SHARE, T, rng.integers(1, T, size=batch_rows))
        ids = scored_ids[rows].astype(np.int32, copy=True)
        for i, c in enumerate(cuts):
            ids[i, c:] = rng.choice(pool, size=T - c)
        out.append(ProbeBatch(ids, rows, cuts))
    return out


def compare(scored_lp: np.ndarray, probe_lp: np.ndarray, batch: ProbeBatch) -> Worst:
    """The largest change, over the probe's rows, in the real targets' log-probabilities
    at the positions before each row's cut."""
    worst = Worst(0.0, int(batch.rows[0]), 0, int(batch.cuts[0]), 0)
    for i, (r, c) in enumerate(zip(batch.rows, batch.cuts)):
        d = np.abs(probe_lp[i, :c].astype(np.float64) - scored_lp[r, :c].astype(np.float64))
        worst.compared += int(c)
        if np.isnan(d).any():
            return Worst(float("nan"), int(r), int(np.argmax(np.isnan(d))), int(c), worst.compared)
        j = int(np.argmax(d))
        if d[j] > worst.diff:
            worst = Worst(float(d[j]), int(r), j, int(c), worst.compared)
    return worst
