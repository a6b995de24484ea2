"""The harness: CLI, experiment runner, data feed and clock, sandbox, scorer and model
runners, calibration, campaigns (see the README: the trust model, budgets, campaigns)."""

import backends  # noqa: E402,F401  (first: sets the process's OpenMP wait policy before torch loads)
