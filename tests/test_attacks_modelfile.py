"""The adversarial suite's model-file family (tests/attacks_modelfile.py): weights stored in
forms a count of floating-point tensors does not see (int32 bit-casts, a bytes attribute)
are counted by the harness (harness/modelfile.py), in the FLOP budget's check and in
num_params_M; an honest declaration by the same rule is never refused."""
import math

import pytest

from tests import attacks_modelfile as A
from tests import fakes
from tests.conftest import ROOT, experiment
from tests.test_attacks import QUICK_CALIBRATION

pytestmark = pytest.mark.slow
FLOPS = ["budget.mode=flops", "budget.reference_seconds=3", "budget.force=true", *QUICK_CALIBRATION]
BIGRAM_FLOATS = 4096 * 32 * 2 + 4096  # the fake's embedding, output weight and bias
TIMEOUT = 480  # seconds: a calibration (the first flops test) and an experiment on 2 busy cores


def packed(tmp_path, before_eval: str, ballast: bool = True, steps: int = 0):
    return fakes.write(tmp_path / "t.py", steps=steps, top=A.BALLAST if ballast else "",
                       extra_defs=A.PACKED_DEFS, before_eval=before_eval)


def test_int32_weights_past_the_flop_budget_are_refused(cache_dir, tmp_path):
    """Declaring one FLOP per token, 1.3x the tokens its own weights allow: refused, though
    its file holds no floating-point tensor at all (a float count would see 0 FLOPs)."""
    res, s = experiment(tmp_path / "run", packed(tmp_path, A.INT32_LYING_FLOPS), *FLOPS, timeout=TIMEOUT)
    assert s["status"] == "refused" and "FLOP budget" in s["reason"], s
    w = s["model_weights"]
    assert w["float_elements"] == 0 and w["other_bytes"] >= 4 * (4_000_000 + BIGRAM_FLOATS)
    assert "x the budget" in (tmp_path / "run" / "train.log").read_text()


def test_the_same_model_declaring_its_weights_trains_to_its_budget(cache_dir, tmp_path):
    """The control: prepare.model_flops_per_token counts the int32 weights as the harness
    does, so the feed stops it at its budget and the run is ok."""
    res, s = experiment(tmp_path / "run", packed(tmp_path, A.INT32_HONEST_FLOPS), *FLOPS, timeout=TIMEOUT)
    assert s["status"] == "ok", s
    used, batch = s["model_flops_per_token"] * s["total_tokens"], s["model_flops_per_token"] * 4 * 256
    assert s["budget_flops"] - batch < used <= s["budget_flops"] * 1.001  # stopped at it, by the feed


def test_the_baseline_in_flops_mode_is_not_refused(cache_dir, tmp_path):
    """trainer/train.py declares prepare.model_flops_per_token: its pickle, its zip and its own
    source are counted on both sides, so it trains to its budget and no further."""
    res, s = experiment(tmp_path / "run", None, *FLOPS, timeout=TIMEOUT)
    assert s["status"] == "ok", s
    used = s["model_flops_per_token"] * s["total_tokens"]
    assert used <= s["budget_flops"] * 1.001
    assert s["model_weights"]["source_bytes"] == (ROOT / "trainer" / "train.py").stat().st_size


@pytest.mark.parametrize("form", ["int32", "bytes"])
def test_num_params_counts_weights_in_any_form(cache_dir, tmp_path, form):
    """Wall mode: the Bigram, repacked before the handover, scores as a model and reports
    its weights in num_params_M (4 bytes each as int32 or bytes: 2 weights), never 0.0."""
    if form == "int32":
        t = packed(tmp_path, A.PACK, ballast=False, steps=5)
    else:
        t = fakes.write(tmp_path / "t.py", extra_defs=A.BLOB_DEFS, before_eval=A.BLOB)
    res, s = experiment(tmp_path / "run", t, timeout=TIMEOUT)
    assert s["status"] == "ok" and math.isfinite(s["val_bpb"]), s
    w = s["model_weights"]
    assert w["float_elements"] == (0 if form == "int32" else 1) and w["parameters"] == 0
    assert s["num_params_M"] >= 2 * BIGRAM_FLOATS / 1e6
    [line] = [line for line in res.stdout.splitlines() if line.startswith("num_params_M:")]
    assert line.split()[1] == f"{s['num_params_M']:.1f}" != "0.0"  # what a float count printed
