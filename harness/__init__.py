"""The harness: CLI, experiment runner, data feed and clock, sandbox, scorer and model
runners, calibration, campaigns (see the README: the trust model, budgets, campaigns)."""
