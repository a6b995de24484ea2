"""The harness: CLI, experiment runner, evaluator, hash guard (DESIGN §2-§3)."""
