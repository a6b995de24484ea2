"""Checks on what a user hands the harness, before any work starts.

The Hydra schema (harness/config.py) checks keys and types; these check the values that
the types accept but that make no sense (budget.seconds=0 would divide by zero deep in
a run, -5 or 1e9 would run silently wrong), the `+key=value` overrides that Hydra adds
without a word, and the fields of a calibration JSON that the code reads. Each problem
is one line, as a ConfigError (a ValueError): the CLI prints it and exits with code 2.

    cfg = checks.validate(compose_dict("experiment", overrides))   # ranges; caps threads
    checks.check_overrides(["+foo=1"], "experiment")               # ConfigError
    checks.calibration_problem({"tokens_per_s": "fast"})           # 'tokens_per_s is a str, ...'
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import typing
from typing import Any, Callable

from trainer.tokenizer import SPECIAL_TOKENS


class ConfigError(ValueError):
    """A config value, an override or a file the user can fix; the message is one line."""


# --- ranges: (key, test, what is allowed); a None value ("when set") is not checked ---

def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v) -> bool:
    return _number(v) and v > 0


def _non_negative(v) -> bool:
    return _number(v) and v >= 0


def _at_least(n: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _number(v) and v >= n), f"an integer >= {n}"


POSITIVE = (_positive, "a finite number > 0")
NON_NEGATIVE = (_non_negative, "a finite number >= 0")
FRACTION = ((lambda v: _number(v) and 0 < v < 1), "a number strictly between 0 and 1")
# the tokenizer's ids are the 256 bytes, at least one merge, then the special tokens
MIN_VOCAB = 256 + 1 + len(SPECIAL_TOKENS)

RANGES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("budget.seconds", *POSITIVE),
    ("budget.reference_seconds", *POSITIVE),
    ("budget.min_seconds", *POSITIVE),
    ("budget.max_seconds", *POSITIVE),
    ("budget.allowance_seconds", *NON_NEGATIVE),
    ("budget.grace_seconds", *NON_NEGATIVE),
    ("budget.warmup_tokens", *_at_least(0)),
    ("eval.timeout_seconds", *POSITIVE),
    ("eval.probe_batches", *_at_least(1)),
    ("eval.probe_tolerance", *NON_NEGATIVE),
    ("eval.bound_factor", (lambda v: _number(v) and v >= 1), "a number >= 1"),
    ("eval.bound_slack_seconds", *NON_NEGATIVE),
    ("eval.runner_seconds", *POSITIVE),
    ("calibrate.max_cv", *NON_NEGATIVE),
    ("calibrate.attempts", *_at_least(1)),
    ("calibrate.repeats", *_at_least(2)),  # the CV needs two windows
    ("calibrate.window_seconds", *POSITIVE),
    ("calibrate.warmup_steps", *_at_least(0)),
    ("calibrate.noise_runs", *_at_least(0)),
    ("calibrate.max_step_seconds", *POSITIVE),
    ("calibrate.timeout_seconds", *POSITIVE),
    ("calibrate.max_age_hours", *NON_NEGATIVE),
    ("data.vocab_size", *_at_least(MIN_VOCAB)),
    ("data.max_seq_len", *_at_least(2)),  # an S layer sees max_seq_len // 2 tokens: at least one
    ("data.eval_tokens", *_at_least(1)),
    ("data.val_fraction", *FRACTION),
    ("data.num_shards", *_at_least(1)),
    ("data.workers", *_at_least(1)),
    ("data.tokenizer_chars", *_at_least(1)),
    ("model.depth", *_at_least(1)),
    ("model.width", *_at_least(1)),
    ("model.head_dim", *_at_least(2)),
    ("model.device_batch_size", *_at_least(1)),
    ("model.total_batch_size", *_at_least(1)),
    ("campaign.max_experiments", *_at_least(0)),
    ("campaign.max_hours", *POSITIVE),
    ("keep.baseline_runs", *_at_least(1)),
    ("keep.confirm_runs", *_at_least(0)),
    ("keep.noise_sigmas", *POSITIVE),
    ("keep.threshold", *NON_NEGATIVE),
    ("replay.repeats", *_at_least(1)),
    ("agent.mutations_per_step", *_at_least(1)),
    ("agent.log_step", *POSITIVE),
    ("agent.max_cost_usd", *NON_NEGATIVE),
    ("agent.max_turns", *_at_least(1)),
    ("agent.max_tokens", *_at_least(1)),
    ("agent.max_retries", *_at_least(0)),
    ("agent.timeout_s", *POSITIVE),
    ("backend.threads", *_at_least(1)),
    ("backend.device", *_at_least(0)),
]

_ABSENT = object()


def _get(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _show(v) -> str:
    """A value as the user would type it in an override."""
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _range_problems(cfg: dict) -> list[str]:
    out = []
    for key, test, allowed in RANGES:
        v = _get(cfg, key)
        if v is not _ABSENT and v is not None and not test(v):
            out.append(f"{key}={_show(v)}: must be {allowed}")
    return out


# --- rules between keys, and on strings: each returns '' or the problem ---

# a git ref component (git check-ref-format) that is also a plain directory name
TAG = re.compile(r"(?![.-])(?!.*\.\.)(?!.*@\{)(?!.*\.lock$)[^\s\x00-\x1f\x7f~^:?*\[\\/]+(?<!\.)")


def _wall_budget(cfg: dict) -> str:
    b = cfg["budget"]
    if (b["mode"] == "wall" and _number(b["seconds"]) and _number(b["max_seconds"])
            and b["seconds"] > b["max_seconds"] and not b["force"]):
        return (f"budget.seconds={_show(b['seconds'])}: more than budget.max_seconds={_show(b['max_seconds'])}; "
                f"set budget.force=true to run that long")
    return ""


def _budget_bounds(cfg: dict) -> str:
    b = cfg["budget"]
    if _number(b["min_seconds"]) and _number(b["max_seconds"]) and b["min_seconds"] > b["max_seconds"]:
        return (f"budget.min_seconds={_show(b['min_seconds'])}: must be <= "
                f"budget.max_seconds={_show(b['max_seconds'])}")
    return ""


def _heads(cfg: dict) -> str:
    """The model splits its width into heads of head_dim, and rotary embeddings rotate
    pairs of a head's channels: head_dim must be even and divide width."""
    m = cfg["model"]
    w, h = m["width"], m["head_dim"]
    if not (_positive(w) and _positive(h)):
        return ""
    if h % 2:
        return f"model.head_dim={h}: must be even (rotary embeddings rotate pairs of channels)"
    if w % h:
        return f"model.width={w}: must be a multiple of model.head_dim={h}"
    return ""


def _batch(cfg: dict) -> str:
    """The frozen baseline (harness/baseline_train.py, which calibration trains) and the
    project's train.py fill one optimizer step with whole forward passes of
    device_batch_size rows of max_seq_len tokens, and assert that it divides."""
    m, t = cfg["model"], cfg["data"]["max_seq_len"]
    total, rows = m["total_batch_size"], m["device_batch_size"]
    if not all(_positive(v) for v in (total, rows, t)):
        return ""
    if total % (rows * t):
        return (f"model.total_batch_size={total}: must be a multiple of model.device_batch_size x data.max_seq_len "
                f"= {rows} x {t} = {rows * t}")
    return ""


def _window_pattern(cfg: dict) -> str:
    p = cfg["model"]["window_pattern"]
    if not p or set(p.upper()) - {"S", "L"}:  # train.py reads it upper-cased
        return f"model.window_pattern={_show(p)}: must be a non-empty string of the letters S and L"
    return ""


def _campaign_tag(cfg: dict) -> str:
    """The tag names a git branch (autoresearch/<tag>/<slot>) and a directory."""
    tag = cfg["campaign"]["tag"]
    if not isinstance(tag, str) or not TAG.fullmatch(tag):
        return (f"campaign.tag={_show(tag)}: must be a non-empty name usable as a git branch component and a "
                f"directory (no '/', spaces, '..', '~^:?*[\\', no leading '-' or '.', no trailing '.' or '.lock')")
    return ""


def _device(cfg: dict) -> str:
    """A GPU index means nothing on a backend without GPUs (`auto` is checked when it resolves)."""
    b = cfg["backend"]
    if b["device"] is not None and b["name"] in ("cpu", "mps"):
        return (f"backend.device={_show(b['device'])}: the {b['name']} backend has no GPUs to pick from; drop "
                f"backend.device (backend.threads=N gives CPU campaigns side by side their own share of the cores)")
    return ""


def _agent_keys(cfg: dict) -> str:
    """Only the chosen agent's keys: Hydra refuses `agent.max_turns=3` with agent=random,
    but lets `+agent.max_turns=3` and `agent.name=` through."""
    from harness.agent_config import key_problem

    return key_problem(cfg["agent"]) if isinstance(cfg["agent"], dict) else ""


def _kernel_names(cfg: dict) -> str:
    from kernels.registry import NAMES  # kernels imports no Triton: cheap

    unknown = [n for n in cfg["kernels"]["only"] or [] if n not in NAMES]
    return (f"kernels.only: no kernel {unknown[0]!r}; the kernels: {', '.join(NAMES)}" if unknown else "")


RULES: list[tuple[tuple[str, ...], Callable[[dict], str]]] = [
    # (the keys a rule reads, the rule): a config lacking one skips the rule
    (("budget.mode", "budget.seconds", "budget.max_seconds", "budget.force"), _wall_budget),
    (("budget.min_seconds", "budget.max_seconds"), _budget_bounds),
    (("model.width", "model.head_dim"), _heads),
    (("model.total_batch_size", "model.device_batch_size", "data.max_seq_len"), _batch),
    (("model.window_pattern",), _window_pattern),
    (("kernels.only",), _kernel_names),
    (("campaign.tag",), _campaign_tag),
    (("backend.name", "backend.device"), _device),
    (("agent.name",), _agent_keys),
]


def available_cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or taskset's
    share), not the machine's; the CPU backend's default thread count."""
    from backends.cpu import available_cores as cores

    return cores()


def _cap_threads(cfg: dict, log) -> None:
    """More intra-op threads than cores makes CPU training many times slower (the threads
    wait on each other), silently: use the cores there are, and say so."""
    threads, cores = _get(cfg, "backend.threads"), available_cores()
    if _number(threads) and threads > cores:
        log(f"backend.threads={threads} is more than the {cores} cores available: using {cores}")
        cfg["backend"]["threads"] = cores


def validate(cfg: dict, log=print) -> dict:
    """The composed config (harness.config.to_dict), checked: ConfigError on the first
    value that makes no sense, naming the key, the value and what is allowed. Returns a
    copy, with backend.threads capped at the available cores (logged); cfg is unchanged."""
    problems = _range_problems(cfg)
    problems += [rule(cfg) for keys, rule in RULES if all(_get(cfg, k) is not _ABSENT for k in keys)]
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError(problems[0])
    out = copy.deepcopy(cfg)
    _cap_threads(out, log)
    return out


# --- `+key=value` overrides: Hydra adds an unknown key silently ---

def _schema_has(key: str) -> bool:
    """Whether `key` (dotted) names a field of the Config dataclass tree, or lies under a
    Dict-typed field (agent.choices, agent.bounds, agent.prices), which takes any key.
    `agent.*` is a key of any agent's schema here; whether the chosen agent has it is
    `validate`'s question (the override may itself choose the agent)."""
    from harness.agent_config import SCHEMAS
    from harness.config import Config

    nodes: list[Any] = [Config]  # the schemas the key may lie in (several under `agent`)
    for i, part in enumerate(key.split(".")):
        if not all(dataclasses.is_dataclass(n) for n in nodes):
            return any(typing.get_origin(n) is dict for n in nodes)
        found = [typing.get_type_hints(n)[part] for n in nodes if part in typing.get_type_hints(n)]
        if not found:
            return False
        nodes = [_optional_of(n) for n in found]
        if i == 0 and part == "agent":
            nodes = list(SCHEMAS.values())
    return True


def _optional_of(node: Any) -> Any:
    """Optional[X] -> X; any other type as it is."""
    if typing.get_origin(node) is typing.Union:
        return next(a for a in typing.get_args(node) if a is not type(None))
    return node


def _is_group(name: str) -> bool:
    """A config group (conf/<name>/, or one of Hydra's): Hydra itself checks those."""
    from harness.config import CONF_DIR

    return "/" in name or (CONF_DIR / name).is_dir()


def check_overrides(args: list[str], verb: str | None = None) -> None:
    """ConfigError for a `+key=value` or `++key=value` whose key the schema does not have:
    Hydra would add it and run as if nothing were asked (a typo, a key from another
    version). Hydra's own config (hydra.*), config groups and the Dict-typed agent fields
    may take new keys. `args` are the overrides (a leading verb is skipped); arguments
    that do not parse are left to Hydra, which reports them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if verb is None and args and re.fullmatch(r"[a-z]+", args[0]):
        verb, args = args[0], args[1:]
    parser = OverridesParser.create()
    for arg in args:
        if not arg.startswith("+"):
            continue
        try:
            o = parser.parse_override(arg)
        except Exception:  # a syntax error: Hydra's message says it best
            continue
        key = o.key_or_group
        if o.package is not None or _is_group(key) or key == "hydra" or key.startswith("hydra."):
            continue
        if not _schema_has(key):
            raise ConfigError(f"unknown config key {key!r} (from {arg!r}): "
                              f"`autoresearch {verb or '<verb>'} --help` lists the keys")


# --- calibration JSON: the fields the code reads, and their types ---

NUMBER, INT, STR, DICT, LIST, NULL = "a number", "an integer", "a string", "an object", "a list", "null"
# field: (the types allowed, required). Required: read by every use of a calibration
# (the cache's validity, budgets, limits, the record); the rest only when present.
CALIBRATION_FIELDS: dict[str, tuple[tuple[str, ...], bool]] = {
    "id": ((STR,), True),
    "created": ((NUMBER,), True),
    "created_iso": ((STR,), True),
    "device": ((STR,), True),
    "preset": ((STR,), True),
    "tokens_per_s": ((NUMBER,), True),
    "cv": ((NUMBER,), True),
    "format": ((INT,), False),
    "backend": ((STR,), False),
    "quality": ((STR,), False),
    "load_warning": ((STR, NULL), False),
    "path": ((STR,), False),
    "fingerprint": ((DICT,), False),
    "model": ((DICT,), False),
    "data": ((DICT,), False),
    "model_flops_per_token": ((NUMBER,), False),
    "startup_seconds": ((NUMBER, NULL), False),
    "probe_noise": ((NUMBER, NULL), False),
    "matmul_flops_per_s": ((NUMBER,), False),
    "matmul_by_shape": ((DICT, LIST), False),
    "bandwidth_bytes_per_s": ((NUMBER,), False),
    "tokens_per_s_windows": ((LIST,), False),
    "mfu_datasheet": ((NUMBER, NULL), False),
    "mfu_measured_peak": ((NUMBER, NULL), False),
    "peak_memory_mb": ((NUMBER,), False),
    "noise": ((DICT, NULL), False),
    "eval_timing": ((DICT,), False),
    "eval_probe_diff": ((NUMBER,), False),
}
NOISE_FIELDS = {"runs": ((INT,), True), "std": ((NUMBER, NULL), False), "mean": ((NUMBER,), False),
                "val_bpb": ((LIST,), False)}


def _kind(v) -> str:
    if v is None:
        return NULL
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return INT
    if isinstance(v, float):
        return NUMBER if math.isfinite(v) else f"{v}"
    return {str: STR, dict: DICT, list: LIST}.get(type(v), type(v).__name__)


def _fits(v, kinds: tuple[str, ...]) -> bool:
    k = _kind(v)
    return k in kinds or (k == INT and NUMBER in kinds)


def _field_problems(obj: dict, fields: dict, prefix: str = "") -> str:
    for name, (kinds, required) in fields.items():
        if name not in obj:
            if required:
                return f"{prefix}{name} is missing"
            continue
        if not _fits(obj[name], kinds):
            return f"{prefix}{name} is {_kind(obj[name])}, expected {' or '.join(kinds)}"
    return ""


def calibration_problem(cal) -> str:
    """'' when a loaded calibration JSON has the fields the code reads, with their types;
    else the first problem ("tokens_per_s is a string, expected a number"). A hand-edited
    or truncated file would otherwise stop a run later with a TypeError traceback."""
    if not isinstance(cal, dict):
        return f"the file holds {_kind(cal)}, not a JSON object"
    problem = _field_problems(cal, CALIBRATION_FIELDS)
    if not problem and isinstance(cal.get("noise"), dict):
        problem = _field_problems(cal["noise"], NOISE_FIELDS, "noise.")
    if not problem and cal["tokens_per_s"] <= 0:
        problem = f"tokens_per_s is {_show(cal['tokens_per_s'])}, expected a number > 0"
    return problem
