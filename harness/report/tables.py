"""The report's tables, as text cells (the HTML and the Markdown escape them, each its own way).

    campaigns_table(figures)      one row per campaign
    discoveries_table(found)      one row per kept experiment and device it was tried on
    telemetry_table(tel)          one row per campaign whose rows carry telemetry
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.report.figures import Discovery, Figures, Telemetry

DASH = "—"  # not measured, or not applicable
DESCRIPTION_CHARS = 80  # a description longer than this is cut in a table (the ledger has it whole)


@dataclass(frozen=True)
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""  # how the numbers were made, under the table


def num(x: float | None, spec: str) -> str:
    return DASH if x is None else format(x, spec)


def signed(x: float | None) -> str:
    return num(x, "+.4f")


def short(s: str, n: int = DESCRIPTION_CHARS) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def budget_text(b: dict) -> str:
    """`normalized, 20 s` (and the reference, when the campaign recorded one)."""
    mode, secs, ref = b.get("mode"), b.get("seconds"), b.get("reference")
    out = str(mode or DASH)
    if isinstance(secs, (int, float)):
        out += f", {secs:.3g} s"
    return out + (f" (reference: {ref})" if ref else "")


def campaigns_table(figures: list[Figures]) -> Table:
    rows = [[f.name, budget_text(f.budget), str(f.experiments), str(f.kept), str(f.crashed), str(f.refused),
             num(f.baseline, ".4f"), num(f.best, ".4f"), signed(f.gain),
             f"{num(f.noise, '.4f')} ({f.noise_runs} run{'s' if f.noise_runs != 1 else ''})", num(f.gain_sigmas, ".1f"), f"{f.spend_usd:.2f}",
             num(f.hours, ".2f"), num(f.per_hour, ".1f"), num(f.non_training, ".0%")]
            for f in figures]
    return Table("Campaigns", ["campaign (tag/slot)", "budget", "experiments", "kept", "crashed", "refused",
                               "baseline val_bpb", "best val_bpb", "gain", "noise σ", "gain / σ", "agent spend ($)",
                               "hours", "experiments / hour", "non-training share"], rows,
                 "val_bpb in bits per byte (lower is better), each the mean of its runs. experiments: after the "
                 "baseline; kept: the baseline not counted. gain: the baseline's val_bpb less the best; σ: the "
                 "standard deviation of val_bpb between the baseline's runs (keep.baseline_runs; — with one run). "
                 "hours: from the first cycle's start to the last row; experiments / hour counts the baseline; "
                 "non-training share: 1 − the runs' training seconds / those hours (agents, start-up, evaluation, "
                 "pauses between invocations).")


def _tried(t: dict, part: str) -> str:
    r = t[part]
    if not r:
        return DASH
    if r["gain"] is None:
        return r["verdict"] or DASH
    sig = f", {r['gain'] / t['noise']:+.1f} σ" if t["noise"] else ""
    return f"{r['gain']:+.4f}{sig} {r['verdict']}".rstrip()


def discoveries_table(found: list[Discovery]) -> Table:
    rows = []
    for d in found:
        own = f", {d.gain / d.noise:+.1f} σ" if d.gain is not None and d.noise else ""
        head = [d.source, str(d.seq), short(d.description), signed(d.gain) + own]
        if not d.tried:
            rows.append(head + [DASH, DASH, DASH, "not replayed"])
        for t in d.tried:
            why = t["individual"].get("why") or t["cumulative"].get("why") or t["why"]
            rows.append(head + [t["target"], _tried(t, "individual"), _tried(t, "cumulative"), short(why)])
    return Table("Kept discoveries across devices", ["campaign", "seq", "description", "gain on its campaign",
                                                     "tried on", "gain alone", "gain with the ones before",
                                                     "note"], rows,
                 "gain on its campaign: its parent's kept val_bpb less its own (σ: its campaign's). tried on: the campaigns it was "
                 "replayed into (`autoresearch replay`, transfer/*.json): the target baseline's val_bpb less its "
                 "own, applied alone and on top of the discoveries before it, in σ of the target's noise, with "
                 "the replay's verdict (helps, neutral, hurts, not applied).")


def telemetry_table(tel: list[Telemetry]) -> Table:
    rows = [[t.name, str(t.runs), num(t.energy_j, ".0f"), num(t.tokens_per_joule, ".1f"), str(t.flagged)]
            for t in tel]
    return Table("Telemetry", ["campaign", "runs measured", "energy per run (J)", "tokens per joule",
                               "flagged runs"], rows,
                 "Sampled by the harness during training. flagged: a run throttled by its device or contended "
                 "by other processes (ringed in the progress plots): its speed, and so its val_bpb under a "
                 "time budget, may be off.")
