"""Config composition (Hydra compose API) and the CLI's handling of bad overrides."""
import itertools

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from harness.config import compose, compose_dict
from tests.conftest import run_cli

BACKENDS = ["auto", "cpu", "cuda", "rocm", "mps"]
DATA = ["builtin", "climbmix", "local"]
MODELS = ["tiny", "small", "reference"]


@pytest.mark.parametrize("verb", ["experiment", "prepare"])
@pytest.mark.parametrize("backend,data,model", list(itertools.product(BACKENDS, DATA, MODELS)))
def test_every_group_option_composes(verb, backend, data, model):
    over = [f"backend={backend}", f"data={data}", f"model={model}"]
    if data == "local":
        over.append("data.path=/tmp/texts")
    cfg = compose_dict(verb, over)
    assert cfg["backend"]["name"] == backend
    assert cfg["data"]["name"] == data
    assert cfg["model"]["name"] == model
    assert cfg["model"]["total_batch_size"] % (cfg["model"]["device_batch_size"] * cfg["data"]["max_seq_len"]) == 0
    assert cfg["budget"]["mode"] == "normalized"


def test_model_presets_size_the_data_and_budget():
    tiny = compose_dict("experiment", ["model=tiny"])
    ref = compose_dict("experiment", ["model=reference", "data=climbmix"])
    assert (tiny["data"]["max_seq_len"], tiny["budget"]["seconds"]) == (256, 20)
    assert tiny["budget"]["seconds"] < 60  # the CPU smoke default
    assert (ref["model"]["depth"], ref["model"]["width"], ref["data"]["vocab_size"], ref["data"]["max_seq_len"]) == (
        8, 512, 8192, 2048)
    assert ref["budget"]["seconds"] == 300
    assert compose_dict("experiment", ["model=tiny", "budget.seconds=7"])["budget"]["seconds"] == 7


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path))
    assert compose_dict("prepare", [])["data"]["cache_dir"] == str(tmp_path)


@pytest.mark.parametrize("override,error", [
    ("nosuchkey=1", ConfigCompositionException),
    ("backend=tpu", ConfigCompositionException),
    ("budget.seconds=abc", ConfigCompositionException),
    ("budget.mode=sometimes", ConfigCompositionException),
    ("budget.reference_seconds=soon", ConfigCompositionException),
    ("model.depth=1.5", ConfigCompositionException),
])
def test_bad_overrides_fail_at_composition(override, error):
    with pytest.raises((error, ValidationError)):
        compose("experiment", [override])


@pytest.mark.parametrize("override,message", [
    ("nosuchkey=1", "Could not override 'nosuchkey'"),
    ("backend=tpu", "Could not find 'backend/tpu'"),
    ("budget.seconds=abc", "could not be converted to Float"),
])
def test_cli_bad_override_is_a_clear_message(override, message, tmp_path):
    res = run_cli("experiment", override, timeout=60)
    assert res.returncode == 1
    assert message in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_cli_unknown_verb_and_usage(tmp_path):
    res = run_cli("frobnicate", timeout=60)
    assert res.returncode == 2 and "unknown verb" in res.stderr
    res = run_cli("--help", timeout=60)
    assert res.returncode == 0 and "experiment" in res.stdout and "prepare" in res.stdout
