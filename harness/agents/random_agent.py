"""The random agent: seeded mutation of train.py's UPPER_CASE literal hyperparameters.

No LLM: the control every LLM campaign should beat, and the offline default (docs/architecture.md, "One campaign").
Each proposal picks `mutations_per_step` knobs among the top-level `NAME = <literal>`
assignments (int, float, bool, str, tuple of numbers) and changes only the literal's text on
its line, so the comment that says why stays put:
  - numbers move by a log-scale step, x * exp(u), u ~ U[-log_step, log_step]; ints stay
    ints >= 1 (powers of two from 16 up, typically sizes, stay powers of two); ratios and
    fractions (RATIO, FRAC) stay in [0, 1]; momenta, betas, probabilities stay in (0, 1),
    moving in 1 - x when close to 1; `bounds: {NAME: [lo, hi]}` clamps any knob;
  - bools flip; strings pick among `choices: {NAME: [...]}` (a string without choices is left
    alone); a tuple mutates one element.
`exclude` names knobs never touched; `include`, when given, limits the search to those names.
Seeded: the same seed gives the same campaign. When the loop passes ctx.seq, the draw depends
only on (seed, seq), so a resumed campaign proposes what the original would have.
"""
from __future__ import annotations

import ast
import math
import random
import re
from collections import Counter
from dataclasses import dataclass

from harness.agent_config import DEFAULT_EXCLUDE, RandomAgentConf
from harness.agents.base import Agent, Context, Proposal
from harness.workspace import EditError

NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
CLOSED_UNIT = ("RATIO", "FRAC")  # may be exactly 0 or 1 (no warm-up, no decay)
OPEN_UNIT = ("MOMENTUM", "BETA", "DROPOUT", "PROB", "EMA")  # 0 or 1 would be degenerate


@dataclass
class Knob:
    """One literal hyperparameter: its value and where its text sits (char columns)."""
    name: str
    value: object
    lineno: int  # 1-based
    col: int
    end_col: int
    elts: list[tuple[int, int]] | None = None  # char spans of a tuple's elements


def split_lines(source: str) -> list[str]:
    """Lines with their endings, split where Python's tokenizer splits them (str.splitlines
    also splits on form feeds and other separators, which would shift ast line numbers)."""
    return re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", source)


def _literal(node: ast.AST):
    if isinstance(node, ast.Constant) and type(node.value) in (bool, int, float, str):
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) in (int, float)):
        return -node.operand.value
    if isinstance(node, ast.Tuple) and node.elts:
        vals = tuple(_literal(e) for e in node.elts)
        if all(type(v) in (int, float) for v in vals):
            return vals
    raise ValueError("not a literal")


def find_knobs(source: str) -> dict[str, Knob]:
    """Top-level UPPER_CASE names assigned exactly once, on one line, to a literal."""
    tree = ast.parse(source)
    lines = split_lines(source)
    assigned = Counter()
    for node in tree.body:
        targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
        for t in targets:
            if isinstance(t, ast.Name):
                assigned[t.id] += 1

    def char_col(lineno: int, byte_col: int) -> int:  # ast columns are UTF-8 byte offsets
        return len(lines[lineno - 1].encode("utf-8")[:byte_col].decode("utf-8"))

    knobs = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not (isinstance(target, ast.Name) and NAME_RE.match(target.id)):
            continue
        if assigned[target.id] != 1 or value.lineno != value.end_lineno:
            continue  # a knob we could not edit unambiguously on one line
        try:
            lit = _literal(value)
        except ValueError:
            continue
        ln = value.lineno
        elts = ([(char_col(ln, e.col_offset), char_col(ln, e.end_col_offset))
                 for e in value.elts] if isinstance(lit, tuple) else None)
        knobs[target.id] = Knob(target.id, lit, ln, char_col(ln, value.col_offset),
                                char_col(ln, value.end_col_offset), elts)
    return knobs


def _sig(x: float) -> float:
    return float(f"{x:.3g}")  # 3 significant digits: readable diffs, no false precision


class RandomAgent(Agent):
    """Seeded random search over train.py's literal hyperparameters."""
    name = "random"

    def __init__(self, cfg: dict, seed: int = 0):
        self.seed = seed
        self.path = cfg.get("path")  # default: the editable file named train.py
        self.per_step = int(cfg.get("mutations_per_step", RandomAgentConf.mutations_per_step))
        self.step = float(cfg.get("log_step", RandomAgentConf.log_step))
        self.exclude = set(cfg.get("exclude", DEFAULT_EXCLUDE))
        self.include = set(cfg["include"]) if cfg.get("include") else None
        self.choices = {k: list(v) for k, v in (cfg.get("choices") or {}).items()}
        self.bounds = {k: tuple(v) for k, v in (cfg.get("bounds") or {}).items()}
        self._rng = random.Random(seed)

    # ------------------------------------------------------------- value mutation
    def _number(self, name: str, v, rng: random.Random):
        """A new value for a number, or None when this one cannot move sensibly."""
        lo, hi = self.bounds.get(name, (None, None))
        for _ in range(8):  # a draw that rounds back to the old value is drawn again
            u = rng.uniform(-self.step, self.step)
            if isinstance(v, int):
                if v < 0:
                    return None
                if v >= 16 and v & (v - 1) == 0:  # sizes and dims: keep the power of two
                    new = v * 2 if u >= 0 else v // 2
                else:
                    new = max(1, round(max(v, 1) * math.exp(u)))
                    if new == v:  # small counts: a step too small to round still moves by 1
                        new = v + 1 if u >= 0 or v == 1 else v - 1
            elif any(h in name for h in CLOSED_UNIT + OPEN_UNIT) and 0 <= v <= 1:
                if v == 0 or v == 1:
                    new = 0.1 * math.exp(u)  # a ratio switched off is switched back on small
                    new = new if v == 0 else 1 - new
                elif v > 0.5:  # near-one quantities (momenta, betas) move in 1 - v
                    new = 1 - (1 - v) * math.exp(u)
                else:
                    new = v * math.exp(u)
                if any(h in name for h in CLOSED_UNIT):
                    new = 0.0 if new < 0.005 else min(new, 1.0)
                else:
                    new = min(max(new, 1e-4), 1 - 1e-4)
                new = _sig(new)
            elif v == 0:
                return None  # no scale to step from, and no hint what a sensible one is
            else:
                new = _sig(v * math.exp(u))
            if lo is not None:
                new = max(new, type(v)(lo))
            if hi is not None:
                new = min(new, type(v)(hi))
            if new != v:
                return new
        return None

    def _mutate(self, knob: Knob, line: str, rng: random.Random):
        """The line with the knob's literal changed, or None if it cannot change."""
        v = knob.value
        span = (knob.col, knob.end_col)
        if isinstance(v, bool):
            new_text = str(not v)
        elif isinstance(v, (int, float)):
            new = self._number(knob.name, v, rng)
            if new is None:
                return None
            new_text = repr(new)
        elif isinstance(v, str):
            options = [c for c in self.choices.get(knob.name, []) if c != v]
            if not options:
                return None
            q = line[knob.col] if line[knob.col] in "'\"" else "'"
            new_text = q + str(rng.choice(options)).replace("\\", "\\\\").replace(q, "\\" + q) + q
        else:  # tuple of numbers: one element moves, the others keep their text
            order = list(range(len(v)))
            rng.shuffle(order)
            for i in order:
                new = self._number(knob.name, v[i], rng)
                if new is not None:
                    span = knob.elts[i]
                    new_text = repr(new)
                    break
            else:
                return None
        return line[:span[0]] + new_text + line[span[1]:]

    # ------------------------------------------------------------- proposing
    def _target(self, ctx: Context) -> str:
        if self.path:
            return self.path
        files = ctx.workspace.list_files()
        named = [f for f in files if f.rsplit("/", 1)[-1] == "train.py"]
        if not named:
            raise EditError(f"random agent: no editable train.py (editable: {files})")
        return named[0]

    def _eligible(self, knob: Knob) -> bool:
        if knob.name in self.exclude:
            return False
        if self.include is not None and knob.name not in self.include:
            return False
        return not isinstance(knob.value, str) or bool(self.choices.get(knob.name))

    def propose(self, ctx: Context) -> Proposal | None:
        rng = (random.Random(f"random-agent:{self.seed}:{ctx.seq}") if ctx.seq is not None
               else self._rng)
        path = self._target(ctx)
        changes, tried = [], set()
        while len(changes) < self.per_step:
            source = ctx.workspace.read(path)
            knobs = find_knobs(source)
            names = sorted(n for n, k in knobs.items() if n not in tried and self._eligible(k))
            if not names:
                break
            name = rng.choice(names)
            tried.add(name)
            knob = knobs[name]
            lines = split_lines(source)
            full = lines[knob.lineno - 1]
            body = full.rstrip("\r\n")
            new_body = self._mutate(knob, body, rng)
            if new_body is None:
                continue
            # Describe the whole literal (a tuple reads better whole than as one element).
            old_text = body[knob.col:knob.end_col]
            new_text = new_body[knob.col:len(new_body) - (len(body) - knob.end_col)]
            # Anchor on the previous line's newline and this line's end so that the text is
            # unique ("LR = 0.1" must not match inside "MATRIX_LR = 0.1").
            before = lines[knob.lineno - 2][-1:] if knob.lineno > 1 else ""
            ending = full[len(body):]
            try:
                ctx.workspace.replace(path, before + body + ending, before + new_body + ending)
            except EditError:
                continue  # ambiguous even when anchored: leave this knob alone
            changes.append(f"{name} {old_text} -> {new_text}")
        if not changes:
            return None
        return Proposal("; ".join(changes))
