"""`autoresearch report`: read the campaigns, draw, tabulate, write the report.

    autoresearch report                              every campaign under campaign.root
    autoresearch report report.tags=[nov30,dec01]    only these tags (every slot of each)
    autoresearch report report.out=/tmp/r            somewhere else than <campaign.root>/report

Writes progress-<tag>-<slot>.png per campaign, cross-device.png, report.html (self-contained)
and report.md into report.out. Campaigns are only read (harness/report/collect.py).
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from harness.guard import ROOT
from harness.report import collect, figures, plots, tables
from harness.report.page import Image, html_page, md_page
from trainer import atomic

HTML_NAME, MD_NAME, CROSS_NAME = "report.html", "report.md", "cross-device.png"
TITLE = "autoresearch report"


def campaign_root(cfg: dict) -> Path:
    """campaign.root as the campaigns use it (relative: to the project)."""
    root = Path(os.path.expanduser(cfg["campaign"]["root"]))
    return root if root.is_absolute() else ROOT / root


def out_dir(cfg: dict, root: Path) -> Path:
    """report.out (relative: to the working directory), else <campaign.root>/report."""
    out = cfg["report"]["out"]
    return Path(os.path.expanduser(out)).absolute() if out else root / "report"


def progress_name(c: collect.CampaignData) -> str:
    return f"progress-{c.tag}-{c.slot}.png"


def run(cfg: dict, log=print) -> list[Path]:
    """The report's files, written; `log` hears each step."""
    root = campaign_root(cfg)
    campaigns = collect.find(root, cfg["report"]["tags"])
    out = out_dir(cfg, root)
    out.mkdir(parents=True, exist_ok=True)
    log(f"report: {len(campaigns)} campaign(s) under {root}")
    figs = [figures.campaign_figures(c) for c in campaigns]
    images = []
    for c, f in zip(campaigns, figs):
        path = plots.progress(c, f, out / progress_name(c))
        images.append(Image(f"Progress: {c.name}", path))
        log(f"report: {c.name}: {f.experiments} experiments, {f.kept} kept -> {path.name}")
    cross = Image("Running best across devices", plots.cross_device(campaigns, figs, out / CROSS_NAME))
    log(f"report: running best of every campaign -> {CROSS_NAME}")
    tel = [t for t in map(figures.telemetry, campaigns) if t is not None]
    blocks = [tables.campaigns_table(figs), cross, *([tables.telemetry_table(tel)] if tel else []),
              tables.discoveries_table(figures.discoveries(campaigns)), *images]
    notes = [n for c in campaigns for n in c.notes]
    meta = (f"{len(campaigns)} campaign(s) under {root}, read "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    atomic.write_text(out / HTML_NAME, html_page(TITLE, meta, blocks, notes))
    atomic.write_text(out / MD_NAME, md_page(TITLE, meta, blocks, notes))
    for n in notes:
        log(f"report: note: {n}")
    written = [out / HTML_NAME, out / MD_NAME, cross.path, *(i.path for i in images)]
    log(f"report: wrote {out / HTML_NAME} (self-contained), {out / MD_NAME} and {len(images) + 1} PNGs in {out}")
    return written
