"""The random agent on the real train.py: the model-size knobs read the model preset
(`DEPTH = prepare.MODEL["depth"]`), are knobs with the preset's values when the loop hands
the agent the preset (Context.prepare_values), and a mutation writes a literal in place of
the read; sizes train.py checks against each other move only to consistent values."""
import ast
from pathlib import Path

import pytest

from harness.agents import Context
from harness.agents.registry import make_agent
from harness.agents.random_agent import find_knobs
from harness.config import compose_dict
from harness.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
SOURCE = (ROOT / "trainer" / "train.py").read_text()
SIZES = {"DEPTH": "depth", "WIDTH": "width", "HEAD_DIM": "head_dim", "DEVICE_BATCH_SIZE": "device_batch_size",
         "TOTAL_BATCH_SIZE": "total_batch_size", "WINDOW_PATTERN": "window_pattern"}


def run_values(preset: str) -> dict:
    cfg = compose_dict("experiment", [f"model={preset}"])
    return {"MODEL": cfg["model"], "MAX_SEQ_LEN": cfg["data"]["max_seq_len"]}


def agent_config(**over) -> dict:
    """The random agent's config as a user gets it (agent=random), its default choices included."""
    return {**compose_dict("run", ["agent=random"])["agent"], **over}


def propose(tmp_path, agent, run, seq=None):
    ws = Workspace(tmp_path, ["train.py"], immutable=[])
    return agent.propose(Context(ws, "", [], None, seq, prepare_values=run))


@pytest.mark.parametrize("preset", ["tiny", "reference"])
def test_find_knobs_sees_the_preset_reads_with_the_preset_values(preset):
    model = run_values(preset)["MODEL"]
    knobs = find_knobs(SOURCE, model)
    for name, key in SIZES.items():
        assert (knobs[name].value, knobs[name].read) == (model[key], True), name
    assert knobs["MATRIX_LR"].read is False
    assert "MAX_SEQ_LEN" not in knobs and "VOCAB_SIZE" not in knobs  # the data's: never knobs
    assert not set(SIZES) & set(find_knobs(SOURCE))  # without the preset: nothing to go on


def test_window_pattern_picks_from_the_default_choices_and_writes_a_literal(tmp_path):
    cfg = agent_config(include=["WINDOW_PATTERN"])
    choices = cfg["choices"]["WINDOW_PATTERN"]
    assert len(choices) > 1  # the default config offers choices: the knob is live
    run = run_values("tiny")
    seen = set()
    for seed in range(6):
        (tmp_path / "train.py").write_text(SOURCE)
        d = propose(tmp_path, make_agent(cfg, seed), run).description
        text = (tmp_path / "train.py").read_text()
        ast.parse(text)
        line = next(ln for ln in text.splitlines() if ln.startswith("WINDOW_PATTERN = "))
        knob = find_knobs(text, run["MODEL"])["WINDOW_PATTERN"]
        assert not knob.read and knob.value in choices and knob.value != run["MODEL"]["window_pattern"]
        assert line == f'WINDOW_PATTERN = "{knob.value}"  # per-layer S/L attention, tiled over depth'
        assert d == f'WINDOW_PATTERN "{run["MODEL"]["window_pattern"]}" -> "{knob.value}"'
        assert [a for a, b in zip(SOURCE.splitlines(), text.splitlines()) if a != b] == [
            'WINDOW_PATTERN = prepare.MODEL["window_pattern"]  # per-layer S/L attention, tiled over depth']
        seen.add(knob.value)
    assert len(seen) > 1
    # no preset in the context: the read is not a knob, nothing is left to change
    (tmp_path / "train.py").write_text(SOURCE)
    assert propose(tmp_path, make_agent(cfg, 0), None) is None


@pytest.mark.parametrize("preset", ["tiny", "small", "reference"])
def test_sizes_stay_consistent_ints(tmp_path, preset):
    (tmp_path / "train.py").write_text(SOURCE)
    run = run_values(preset)
    agent = make_agent(agent_config(include=[n for n in SIZES if n != "WINDOW_PATTERN"]), 3)
    moved = set()
    for seq in range(30):
        p = propose(tmp_path, agent, run, seq)
        moved.add(p.description.split()[0])
        v = {n: k.value for n, k in find_knobs((tmp_path / "train.py").read_text(), run["MODEL"]).items()}
        for name in ("DEPTH", "WIDTH", "HEAD_DIM", "DEVICE_BATCH_SIZE", "TOTAL_BATCH_SIZE"):
            assert type(v[name]) is int and v[name] >= 1, (name, v[name])
        assert v["WIDTH"] % v["HEAD_DIM"] == 0 and v["HEAD_DIM"] % 2 == 0, p.description
        assert v["TOTAL_BATCH_SIZE"] % (v["DEVICE_BATCH_SIZE"] * run["MAX_SEQ_LEN"]) == 0, p.description
    assert moved == set(SIZES) - {"WINDOW_PATTERN"}
