"""The report's figures, drawn with Matplotlib's Agg backend (no display needed).

    progress(c, figures, path)      one campaign: val_bpb per experiment, the running best
                                    (progress_figure: the same, as a Figure, unsaved)
    cross_device(campaigns, path)   every campaign's running best against experiments and hours

Every string is drawn as plain text (parse_math=False): in a ledger's description, written
by the agent, `$` would otherwise start Matplotlib's math mode, and a bad formula fails the
drawing.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from harness.report.collect import CampaignData, Experiment  # noqa: E402
from harness.report.figures import Figures  # noqa: E402
from harness.report.tables import budget_text  # noqa: E402

KEPT, DISCARD, CRASH, REFUSED, FLAG = "#1a9850", "#8c8c8c", "#d73027", "#f46d43", "#7b3294"
LABEL_CHARS = 38  # a kept step's label is cut to this many characters
DPI = 110
EDGE = 0.965  # axes fraction where points with no val_bpb (or above the view) are marked


def _label(s: str) -> str:
    return s if len(s) <= LABEL_CHARS else s[: LABEL_CHARS - 1] + "…"


def _legend(ax, **kw) -> None:
    for t in ax.legend(**kw).get_texts():
        t.set_parse_math(False)


def _view(exps: list[Experiment]) -> tuple[float, float] | None:
    """The val_bpb range shown: the kept steps with room for labels, and anything below
    them; a run far worse than the baseline (diverged) is marked at the top edge instead."""
    kept = [e.value for e in exps if e.status == "keep" and e.value is not None]
    values = [e.value for e in exps if e.value is not None]
    if not values:
        return None
    top, low = max(kept or values), min(values)
    span = max(top - low, 0.002 * abs(top), 1e-3)
    return low - 0.2 * span, top + 0.45 * span


def running_best(exps: list[Experiment]) -> list[tuple[int, float | None, float | None]]:
    """(number, hours, best kept val_bpb so far) at each experiment."""
    out, best = [], None
    for e in exps:
        if e.status == "keep" and e.value is not None and (best is None or e.value < best):
            best = e.value
        out.append((e.number, e.hours, best))
    return out


def progress(c: CampaignData, f: Figures, path: Path) -> Path:
    return _save(progress_figure(c, f), path)


def progress_figure(c: CampaignData, f: Figures):
    """val_bpb per experiment: discarded ones faint, crashes and refusals at the top edge,
    the kept ones on the running best's steps with their descriptions, flagged runs ringed."""
    exps = c.experiments()
    fig, ax = plt.subplots(figsize=(13, 6.5), dpi=DPI)
    view = _view(exps)
    lo, hi = view or (0.0, 1.0)
    edge = ax.get_xaxis_transform()  # x in data, y in axes fraction: marks at the top edge

    def place(group, label, **style):
        """At their val_bpb, or at the top edge (a triangle for a dot) when none or above the view."""
        inside = [e for e in group if e.value is not None and e.value <= hi]
        out = [e for e in group if e not in inside]
        if inside:
            ax.scatter([e.number for e in inside], [e.value for e in inside], label=label, **style)
        if out:
            marker = "^" if style.get("marker", "o") == "o" else style["marker"]
            ax.scatter([e.number for e in out], [EDGE] * len(out), transform=edge, clip_on=False,
                       label=None if inside else label, **{**style, "marker": marker})

    discards = [e for e in exps if e.status == "discard"]
    far = sum(1 for e in discards if e.value is None or e.value > hi)
    place(discards, f"discarded ({len(discards)}" + (f"; {far} at the top edge: worse than the view or no run)"
                                                      if far else ")"),
          s=22, color=DISCARD, alpha=0.55, linewidths=0, zorder=2)
    for status, color, word in (("crash", CRASH, "crashed"), ("refused", REFUSED, "refused")):
        group = [e for e in exps if e.status == status]
        if group:
            place(group, f"{word} ({len(group)}, at the top edge: no val_bpb)", s=36, marker="x", color=color,
                  alpha=0.7, zorder=2)

    steps = [(n, b) for n, _, b in running_best(exps) if b is not None]
    if steps:
        ax.step([n for n, _ in steps], [b for _, b in steps], where="post", color=KEPT, linewidth=2, zorder=3,
                label="running best (kept)")
    kept = [e for e in exps if e.status == "keep" and e.value is not None]
    ax.scatter([e.number for e in kept], [e.value for e in kept], s=46, color=KEPT, edgecolors="black",
               linewidths=0.6, zorder=4, label=f"kept ({f.kept} + the baseline)")
    for e in kept:
        ax.annotate(_label(e.description), (e.number, e.value), xytext=(5, 7), textcoords="offset points",
                    rotation=22, fontsize=8, color="#14532d", zorder=5, annotation_clip=True, parse_math=False)

    flagged = [e for e in exps if e.flags]
    if flagged:
        at = [(e.number, e.value) for e in flagged if e.value is not None and e.value <= hi]
        edge_x = [e.number for e in flagged if e.value is None or e.value > hi]
        ring = dict(s=190, facecolors="none", edgecolors=FLAG, linewidths=1.6, zorder=6)
        ax.scatter([x for x, _ in at], [y for _, y in at], label=f"telemetry flag: throttled or contended "
                   f"({len(flagged)})", **ring)
        if edge_x:
            ax.scatter(edge_x, [EDGE] * len(edge_x), transform=edge, clip_on=False, **ring)

    if view is None:
        ax.text(0.5, 0.5, "no val_bpb recorded", transform=ax.transAxes, ha="center", color=DISCARD)
    ax.set_ylim(lo, hi)
    last = max(len(exps) - 1, 1)
    ax.set_xlim(-0.6, last + 0.6 + 0.2 * (last + 1.2))  # room on the right for the last kept step's label
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("experiment # (0 = the baseline; confirmation re-runs not counted)")
    ax.set_ylabel("val_bpb (bits per byte, lower is better)")
    ax.set_title(f"{c.name}: {f.experiments} experiments after the baseline, {f.kept} kept\n"
                 f"budget: {budget_text(f.budget)}", fontsize=11, parse_math=False)
    ax.grid(True, alpha=0.3)
    _legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    return fig


def cross_device(campaigns: list[CampaignData], figures: list[Figures], path: Path) -> Path:
    fig, (by_n, by_h) = plt.subplots(1, 2, figsize=(14, 6.2), dpi=DPI, sharey=True)
    styles = ["-", "--", "-.", ":"]
    for i, c in enumerate(campaigns):
        best = [(n, h, b) for n, h, b in running_best(c.experiments()) if b is not None]
        if not best:
            continue
        style = dict(color=plt.get_cmap("tab10")(i % 10), linestyle=styles[(i // 10) % 4], linewidth=2,
                     where="post")
        by_n.step([n for n, _, _ in best], [b for _, _, b in best], label=c.name, **style)
        steps = [(n, h, b) for i, (n, h, b) in enumerate(best) if i == 0 or b < best[i - 1][2]]
        by_n.scatter([n for n, _, _ in steps], [b for _, _, b in steps], s=18, color=style["color"], zorder=3)
        timed = [(h, b) for _, h, b in best if h is not None]
        if timed:
            by_h.step([h for h, _ in timed], [b for _, b in timed], label=c.name, **style)
            by_h.scatter([h for _, h, _ in steps if h is not None], [b for _, h, b in steps if h is not None],
                         s=18, color=style["color"], zorder=3)
    by_n.set_xlabel("experiments (0 = the baseline)")
    by_n.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_h.set_xlabel("wall-clock hours since the campaign's start")
    by_n.set_ylabel("best kept val_bpb so far (bits per byte, lower is better)")
    for ax in (by_n, by_h):
        ax.grid(True, alpha=0.3)
    _legend(by_n, fontsize=9, loc="best")
    fig.suptitle("Running best val_bpb per campaign (tag/slot)", fontsize=12)
    budgets = "\n".join(f"{f.name}: budget {budget_text(f.budget)}" for f in figures[:8])
    if len(figures) > 8:
        budgets += f"\n... and {len(figures) - 8} more (see the table)"
    fig.text(0.01, 0.01, budgets, fontsize=8, va="bottom", ha="left", color="#333333", parse_math=False)
    fig.subplots_adjust(bottom=0.16 + 0.025 * min(len(figures), 9), top=0.9, wspace=0.05)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
