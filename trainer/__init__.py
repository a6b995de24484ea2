"""The experiment contract (the README's "The experiment contract"): immutable prepare/evaluate,
the agent's train.py."""
