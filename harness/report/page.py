"""report.html (one self-contained file) and report.md, from the same tables and figures.

The HTML opens offline, anywhere: its images are data URIs, its style inline, and it holds
no script and no link. Every string from a ledger or a transfer file (descriptions are the
agent's) is escaped in both, HTML and Markdown each by its own rules.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from harness.report.tables import Table

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       color: #1f2328; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.55em; vertical-align: top; }
th { background: #f6f8fa; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
p.note, p.meta { color: #57606a; font-size: 0.85em; max-width: 1100px; }
img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
ul.notes { color: #9a6700; font-size: 0.85em; }
"""


@dataclass(frozen=True)
class Image:
    title: str
    path: Path  # the PNG, beside the report


def _numeric(cell: str) -> bool:
    return bool(cell) and cell.lstrip("+-−").replace(".", "", 1).replace("%", "").replace(",", "").isdigit()


def html_table(t: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in t.headers)
    body = "\n".join("<tr>" + "".join(f'<td class="num">{e(c)}</td>' if _numeric(c) else f"<td>{e(c)}</td>"
                                      for c in row) + "</tr>" for row in t.rows)
    note = f'<p class="note">{e(t.note)}</p>' if t.note else ""
    return f"<h2>{e(t.title)}</h2>\n<table>\n<tr>{head}</tr>\n{body}\n</table>\n{note}"


def html_image(img: Image) -> str:
    data = base64.b64encode(img.path.read_bytes()).decode("ascii")
    return (f"<h2>{html.escape(img.title)}</h2>\n"
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(img.title, quote=True)}">')


def html_page(title: str, meta: str, blocks: list[Table | Image], notes: list[str]) -> str:
    """The page: the title, a line about it, the tables and images in order, what was left out."""
    e = html.escape
    parts = [f"<h1>{e(title)}</h1>", f'<p class="meta">{e(meta)}</p>',
             *(html_image(b) if isinstance(b, Image) else html_table(b) for b in blocks)]
    if notes:
        parts.append("<h2>Left out</h2>\n<ul class=\"notes\">" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{e(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


MD_SPECIAL = set("\\`*_[]<>|!#~&")


def md(s: str) -> str:
    """Text as Markdown shows it literally, on one line: no HTML, no link, no table break."""
    return "".join("\\" + ch if ch in MD_SPECIAL else ch for ch in " ".join(s.split()))


def md_table(t: Table) -> str:
    lines = [f"## {md(t.title)}", "", "| " + " | ".join(map(md, t.headers)) + " |",
             "|" + "|".join("---:" if any(_numeric(r[i]) for r in t.rows) else "---" for i in range(len(t.headers)))
             + "|"]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines + ([f"\n{md(t.note)}"] if t.note else []))


def md_image(img: Image) -> str:
    return f"## {md(img.title)}\n\n![{md(img.title)}]({quote(img.path.name)})"


def md_page(title: str, meta: str, blocks: list[Table | Image], notes: list[str]) -> str:
    """As html_page, the images linked (the PNGs beside it)."""
    parts = [f"# {md(title)}", md(meta), *(md_image(b) if isinstance(b, Image) else md_table(b) for b in blocks)]
    if notes:
        parts.append("## Left out\n\n" + "\n".join(f"- {md(n)}" for n in notes))
    return "\n\n".join(parts) + "\n"
