"""The random agent: seeded mutation of train.py's UPPER_CASE hyperparameters.

No LLM: the control every LLM campaign should beat, and the offline default (docs/architecture.md, "One campaign").
Each proposal picks `mutations_per_step` knobs among the top-level `NAME = <literal>`
assignments (int, float, bool, str, tuple of numbers) and changes only the literal's text on
its line, so the comment that says why stays put. The model-size knobs of the baseline read
the model preset (`DEPTH = prepare.MODEL["depth"]`): given the preset (the loop passes it
in the Context), such a read is a knob whose value is the preset's, and a mutation writes a
literal in its place (`DEPTH = 5`).
  - numbers move by a log-scale step, x * exp(u), u ~ U[-log_step, log_step]; ints stay
    ints >= 1 (powers of two from 16 up, typically sizes, stay powers of two); ratios and
    fractions (RATIO, FRAC) stay in [0, 1]; momenta, betas, probabilities stay in (0, 1),
    moving in 1 - x when close to 1; `bounds: {NAME: [lo, hi]}` clamps any knob;
  - the size knobs train.py checks against each other snap to the nearest consistent
    value in the direction of the move (see `_snap`), so no experiment is spent on a
    start-up crash the agent could foresee;
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
    read: bool = False  # `prepare.MODEL["key"]`: the value is the preset's; a mutation writes a literal


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


def _preset_key(node: ast.AST) -> str | None:
    """"key" when `node` is `prepare.MODEL["key"]` (a read of the model preset), else None."""
    if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "MODEL" and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "prepare" and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)):
        return node.slice.value
    return None


def find_knobs(source: str, preset: dict | None = None) -> dict[str, Knob]:
    """Top-level UPPER_CASE names assigned exactly once, on one line, to a literal, or (when
    `preset`, the model preset, is given) to a read `prepare.MODEL["key"]` of a literal
    value of the preset, which is then the knob's value."""
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
        read = False
        try:
            lit = _literal(value)
        except ValueError:
            key = _preset_key(value)
            if preset is None or key is None or type(preset.get(key)) not in (bool, int, float, str):
                continue
            lit, read = preset[key], True
        ln = value.lineno
        elts = ([(char_col(ln, e.col_offset), char_col(ln, e.end_col_offset))
                 for e in value.elts] if isinstance(lit, tuple) else None)
        knobs[target.id] = Knob(target.id, lit, ln, char_col(ln, value.col_offset),
                                char_col(ln, value.end_col_offset), elts, read)
    return knobs


def _sig(x: float) -> float:
    return float(f"{x:.3g}")  # 3 significant digits: readable diffs, no false precision


def _text(value) -> str:
    """A value as it would be written in the file."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' if isinstance(value, str) else repr(value)


# ----------------------------------------------------------------- consistent sizes
def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)})


def _nearest(options: list[int], new: int, up: bool) -> int | None:
    """The option nearest `new` on the side of the move (>= new going up, <= going down)."""
    side = [o for o in options if (o >= new if up else o <= new)]
    return (min(side) if up else max(side)) if side else None


def _multiple(new: int, m: int, up: bool) -> int | None:
    snapped = -(-new // m) * m if up else new // m * m
    return snapped or None


def _snap(name: str, new: int, up: bool, values: dict) -> int | None:
    """`new` for the size knob `name`, moved to the nearest value on the side of the move
    that train.py accepts given the other sizes: WIDTH a multiple of HEAD_DIM, HEAD_DIM an
    even divisor of WIDTH (rotary pairs channels), TOTAL_BATCH_SIZE a multiple of
    DEVICE_BATCH_SIZE x MAX_SEQ_LEN, DEVICE_BATCH_SIZE a divisor of TOTAL_BATCH_SIZE /
    MAX_SEQ_LEN. None when no such value lies on that side. A rule applies only when the
    values it reads are known positive ints (`values`: the knobs, plus MAX_SEQ_LEN), so a
    file shaped otherwise is left to its own checks."""
    def get(k):
        v = values.get(k)
        return v if type(v) is int and v > 0 else None

    width, head, rows, total, seq = (get(k) for k in ("WIDTH", "HEAD_DIM", "DEVICE_BATCH_SIZE",
                                                       "TOTAL_BATCH_SIZE", "MAX_SEQ_LEN"))
    if name == "WIDTH" and head:
        return _multiple(new, head, up)
    if name == "HEAD_DIM" and width:
        return _nearest([d for d in _divisors(width) if d % 2 == 0], new, up)
    if name == "TOTAL_BATCH_SIZE" and rows and seq:
        return _multiple(new, rows * seq, up)
    if name == "DEVICE_BATCH_SIZE" and total and seq and total % seq == 0:
        return _nearest(_divisors(total // seq), new, up)
    return new


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
    def _number(self, name: str, v, rng: random.Random, values: dict | None = None):
        """A new value for a number, or None when this one cannot move sensibly. `values`
        (the knobs' current values, and MAX_SEQ_LEN) keeps sizes consistent (`_snap`)."""
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
            if isinstance(v, int) and values:
                new = _snap(name, new, new > v, values)
            if new is not None and new != v:
                return new
        return None

    def _mutate(self, knob: Knob, line: str, rng: random.Random, values: dict | None = None):
        """The line with the knob's literal (or preset read) replaced by a new literal, or
        None if it cannot change."""
        v = knob.value
        span = (knob.col, knob.end_col)
        if isinstance(v, bool):
            new_text = str(not v)
        elif isinstance(v, (int, float)):
            new = self._number(knob.name, v, rng, values)
            if new is None:
                return None
            new_text = repr(new)
        elif isinstance(v, str):
            options = [c for c in self.choices.get(knob.name, []) if c != v]
            if not options:
                return None
            q = line[knob.col] if line[knob.col] in "'\"" else '"'  # a preset read: quoted as train.py quotes strings
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
        run = ctx.prepare_values or {}  # what train.py's reads of `prepare` give in this campaign
        changes, tried = [], set()
        while len(changes) < self.per_step:
            source = ctx.workspace.read(path)
            knobs = find_knobs(source, run.get("MODEL"))
            values = {"MAX_SEQ_LEN": run.get("MAX_SEQ_LEN"), **{n: k.value for n, k in knobs.items()}}
            names = sorted(n for n, k in knobs.items() if n not in tried and self._eligible(k))
            if not names:
                break
            name = rng.choice(names)
            tried.add(name)
            knob = knobs[name]
            lines = split_lines(source)
            full = lines[knob.lineno - 1]
            body = full.rstrip("\r\n")
            new_body = self._mutate(knob, body, rng, values)
            if new_body is None:
                continue
            # Describe the whole literal (a tuple reads better whole than as one element), and
            # a preset read by its value.
            old_text = _text(knob.value) if knob.read else body[knob.col:knob.end_col]
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
