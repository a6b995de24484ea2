"""Default Claude API prices, USD per million tokens, for the claude agent's cost accounting.

Figures from Anthropic's pricing page (platform.claude.com/docs/en/about-claude/pricing,
"Model pricing" table: base input, 5-minute cache writes, cache hits, output), as published
when this file was written. Prices change: the config's `agent.prices` overrides or extends
this table per model, and a model found in neither is refused rather than counted as free
(a cost cap on an unpriced model would cap nothing).

`cache_write` is the 5-minute rate: the agent marks its prefix {"type": "ephemeral"}, which
is the 5-minute cache.
"""
from __future__ import annotations

import re


def _p(inp: float, out: float, cache_write: float, cache_read: float) -> dict:
    return {"input": inp, "output": out, "cache_write": cache_write, "cache_read": cache_read}


DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "claude-opus-5": _p(5.0, 25.0, 6.25, 0.50),
    "claude-sonnet-5": _p(2.0, 10.0, 2.50, 0.20),
    "claude-opus-4-8": _p(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-7": _p(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-6": _p(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-5": _p(5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-1": _p(15.0, 75.0, 18.75, 1.50),
    "claude-sonnet-4-6": _p(3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4-5": _p(3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4-0": _p(3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4": _p(3.0, 15.0, 3.75, 0.30),
    "claude-haiku-4-5": _p(1.0, 5.0, 1.25, 0.10),
    "claude-3-5-haiku": _p(0.80, 4.0, 1.0, 0.08),
}

PRICE_KEYS = ("input", "output", "cache_write", "cache_read")
# A dated snapshot ("claude-sonnet-4-5-20250929") or an alias ("...-latest") of a listed model
# costs what the model costs; any other suffix is a different model and must be priced.
_SUFFIX = re.compile(r"-(\d{8}|latest)$")


def price_for(model: str, prices: dict | None = None) -> dict[str, float]:
    """The price entry for `model` from `prices` (config) over DEFAULT_PRICES; KeyError if none."""
    table = {**DEFAULT_PRICES, **(prices or {})}
    base = _SUFFIX.sub("", model)
    for name in (model, base):
        if name in table:
            entry = table[name]
            missing = [k for k in PRICE_KEYS if k not in entry]
            if missing:
                raise KeyError(f"price for {name!r} lacks {missing}")
            return {k: float(entry[k]) for k in PRICE_KEYS}
    raise KeyError(f"no price for model {model!r}; add agent.prices.{model} = "
                   f"{{input, output, cache_write, cache_read}} (USD per million tokens)")


def cost_usd(price: dict[str, float], tokens_in: int, tokens_out: int, cache_write: int,
             cache_read: int) -> float:
    """Dollars for one request's usage; input tokens exclude the cached ones, as the API
    reports them."""
    return (tokens_in * price["input"] + tokens_out * price["output"]
            + cache_write * price["cache_write"] + cache_read * price["cache_read"]) / 1e6
