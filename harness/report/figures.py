"""The numbers of a report, from the ledgers' rows (every one written by the harness, none
by the training process): per campaign, per kept discovery, per campaign's telemetry.

    f = campaign_figures(c)          # Figures: counts, best, gain in noise units, spend, pace
    discoveries(campaigns)           # each kept experiment, and its replays on other devices
    telemetry(c)                     # Telemetry, or None when no row carries any
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from harness.keep import Noise
from harness.ledger import metric
from harness.ledger_rows import CONFIRM, is_experiment, kept_value
from harness.report.collect import CampaignData, run_flags, text


@dataclass(frozen=True)
class Figures:
    name: str  # tag/slot
    experiments: int  # after the baseline (as campaign.max_experiments counts them)
    kept: int  # kept experiments, the baseline not counted
    discarded: int
    crashed: int
    refused: int
    baseline: float | None  # the baseline's val_bpb (the mean of its runs)
    best: float | None  # the best kept val_bpb (the mean of its runs)
    noise: float | None  # std of val_bpb between the baseline's runs
    noise_runs: int  # how many runs that std is from
    spend_usd: float  # the agent's dollars (every row's agent_cost_usd, stopped proposals included)
    hours: float | None  # wall-clock span of the ledger's rows
    training_seconds: float  # summed over every run (confirm runs included)
    budget: dict = field(default_factory=dict)  # mode, seconds, reference

    @property
    def gain(self) -> float | None:
        """The baseline's val_bpb less the best (positive = better)."""
        return None if self.baseline is None or self.best is None else self.baseline - self.best

    @property
    def gain_sigmas(self) -> float | None:
        """The gain in units of the baseline's run-to-run noise."""
        return None if self.gain is None or not self.noise else self.gain / self.noise

    @property
    def per_hour(self) -> float | None:
        """Experiments (the baseline included) per wall-clock hour."""
        return (self.experiments + 1) / self.hours if self.hours else None

    @property
    def non_training(self) -> float | None:
        """The share of the wall-clock span not spent training: agents, start-up, evaluation, idle."""
        return 1 - self.training_seconds / (3600 * self.hours) if self.hours else None


def baseline_noise(c: CampaignData) -> tuple[float | None, int]:
    """(std, runs) of the baseline's val_bpb: its row and the confirm rows of seq 0, by the
    keep rule's own pooling (runs that did not score measure nothing)."""
    runs = [r for r in c.rows if r["seq"] == 0 or (r.get("status") == CONFIRM and r.get("confirms") == 0)]
    scored = [r for r in runs if metric(r.get("val_bpb")) is not None and r.get("experiment_status", "ok") == "ok"]
    return Noise.pooled(runs).std, len(scored)


def campaign_figures(c: CampaignData) -> Figures:
    rows = c.rows
    exps = [r for r in rows if is_experiment(r)]
    count = {s: sum(1 for r in exps if r.get("status") == s) for s in ("keep", "discard", "crash", "refused")}
    kept = [kept_value(r) for r in rows if r.get("status") == "keep"]
    kept = [v for v in kept if v is not None]
    base = next((r for r in rows if r["seq"] == 0 and r.get("status") == "keep"), None)
    noise, runs = baseline_noise(c)
    start, end = c.start(), c.end()
    return Figures(
        name=c.name, experiments=len(exps), kept=count["keep"], discarded=count["discard"], crashed=count["crash"],
        refused=count["refused"], baseline=kept_value(base) if base else None, best=min(kept) if kept else None,
        noise=noise, noise_runs=runs, spend_usd=sum(metric(r.get("agent_cost_usd")) or 0.0 for r in rows),
        hours=(end - start) / 3600 if start is not None and end is not None and end > start else None,
        training_seconds=sum(metric(r.get("training_seconds")) or 0.0 for r in rows), budget=c.budget())


@dataclass(frozen=True)
class Telemetry:
    name: str
    runs: int  # runs whose rows carry telemetry
    energy_j: float | None  # mean energy of a run, where measured (joules)
    tokens_per_joule: float | None  # mean over the runs that measured it
    flagged: int  # runs with a throttled: or contended: flag


def telemetry(c: CampaignData) -> Telemetry | None:
    tel = [r["telemetry"] for r in c.rows if isinstance(r.get("telemetry"), dict)]
    if not tel:
        return None
    energy = [v for v in (metric(t.get("energy_j")) for t in tel) if v is not None]
    tpj = [v for v in (metric(t.get("tokens_per_joule")) for t in tel) if v is not None]
    flagged = sum(1 for r in c.rows if run_flags(r))
    return Telemetry(c.name, len(tel), statistics.mean(energy) if energy else None,
                     statistics.mean(tpj) if tpj else None, flagged)


@dataclass
class Discovery:
    """A kept experiment of one campaign and what became of it on the devices it was replayed on."""
    source: str  # tag/slot
    seq: int
    commit: str
    description: str
    gain: float | None  # on its own campaign: its parent's kept val_bpb less its own
    noise: float | None = None  # its campaign's noise (the std of the baseline's runs)
    tried: list[dict] = field(default_factory=list)  # per target: target, noise, individual, cumulative


def _kept_discoveries(c: CampaignData) -> list[Discovery]:
    out, before, noise = [], None, baseline_noise(c)[0]
    for r in c.rows:
        if r.get("status") != "keep":
            continue
        value = kept_value(r)
        if r["seq"] > 0:
            gain = None if before is None or value is None else before - value
            out.append(Discovery(c.name, r["seq"], text(r.get("commit")), text(r.get("description")), gain, noise))
        before = value if value is not None else before
    return out


def discoveries(campaigns: list[CampaignData]) -> list[Discovery]:
    """Every kept experiment (the baselines not counted), each with its replays from the
    transfer files (a replayed experiment whose source is not in the report is listed too)."""
    found = [d for c in campaigns for d in _kept_discoveries(c)]
    by_key = {(d.source, d.seq): d for d in found}
    for c in campaigns:
        for t in c.transfers:
            src = f"{text(t['source'].get('tag'))}/{text(t['source'].get('slot'))}"
            for row in t["rows"]:
                seq = row.get("seq")
                d = by_key.get((src, seq))
                if d is None:
                    d = Discovery(src, seq if isinstance(seq, int) else -1, text(row.get("commit")),
                                  text(row.get("description")), metric(row.get("source_gain")))
                    by_key[(src, seq)] = d
                    found.append(d)
                d.tried.append({"target": c.name, "noise": metric(t.get("noise")),
                                "individual": _result(row.get("individual")),
                                "cumulative": _result(row.get("cumulative")), "why": text(row.get("why"))})
    return found


def _result(part) -> dict:
    """A replay's result (gain, verdict, runs), numbers checked; {} when absent."""
    if not isinstance(part, dict):
        return {}
    return {"gain": metric(part.get("gain")), "verdict": text(part.get("verdict")),
            "runs": part.get("runs") if isinstance(part.get("runs"), int) else None,
            "why": text(part.get("why"))}
