"""The experiment contract (DESIGN §3): immutable prepare/evaluate, the agent's train.py."""
