"""Input checks (harness/checks.py): config values the schema's types accept but that make
no sense, `+key=value` overrides of keys the schema lacks, calibration JSON of the wrong
shape. Each must stop with one line that names the key; all in-process, fast."""
import json
import time

import pytest

from harness import budget as B
from harness import calibration, calibration_store, checks
from harness.checks import ConfigError, calibration_problem, check_overrides, validate
from harness.config import compose_dict

VERBS = ["prepare", "calibrate", "experiment", "run"]
MODELS = ["tiny", "small", "reference"]


def checked(*over, verb="run", log=print):
    return validate(compose_dict(verb, list(over)), log=log)


def refused(*over, verb="run") -> str:
    with pytest.raises(ConfigError) as e:
        checked(*over, verb=verb)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("model", MODELS)
def test_defaults_and_presets_pass(verb, model):
    cfg = compose_dict(verb, [f"model={model}"])
    assert validate(cfg, log=pytest.fail) == cfg


@pytest.mark.parametrize("data", ["builtin", "climbmix", "local"])
def test_every_data_set_passes(data):
    over = [f"data={data}"] + (["data.path=/tmp/texts"] if data == "local" else [])
    checked(*over, log=pytest.fail)


def test_config_error_is_a_value_error_the_cli_reports_in_one_line():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("override", [
    "budget.seconds=0", "budget.seconds=-5", "budget.seconds=inf", "budget.seconds=nan",
    "budget.reference_seconds=0", "budget.min_seconds=0", "budget.max_seconds=-1",
    "budget.allowance_seconds=-1", "budget.grace_seconds=-0.5", "budget.warmup_tokens=-1",
    "eval.timeout_seconds=0", "eval.probe_batches=0", "eval.probe_tolerance=-1e-3", "eval.probe_tolerance=inf",
    "calibrate.max_cv=-0.1", "calibrate.attempts=0", "calibrate.repeats=1", "calibrate.window_seconds=0",
    "calibrate.noise_runs=-1", "calibrate.max_step_seconds=0", "calibrate.timeout_seconds=-1",
    "calibrate.max_age_hours=-1",
    "data.vocab_size=0", "data.vocab_size=260", "data.max_seq_len=0", "data.eval_tokens=0",
    "data.val_fraction=0", "data.val_fraction=1", "data.num_shards=0", "data.workers=0", "data.tokenizer_chars=0",
    "model.depth=0", "model.width=0", "model.head_dim=0", "model.device_batch_size=0", "model.total_batch_size=0",
    "campaign.max_experiments=-1", "campaign.max_hours=0",
    "keep.baseline_runs=0", "keep.confirm_runs=-1", "keep.noise_sigmas=0", "keep.threshold=-0.01",
    "backend.threads=0",
])
def test_out_of_range_values_are_refused_naming_key_and_value(override):
    key, value = override.split("=")
    msg = refused(override)
    assert msg.startswith(f"{key}=") and "must be" in msg, msg
    assert float(msg.split("=", 1)[1].split(":")[0]) == pytest.approx(float(value), nan_ok=True), msg


def test_the_smallest_vocab_the_tokenizer_takes_passes():
    from trainer.tokenizer import SPECIAL_TOKENS

    assert checks.MIN_VOCAB == 256 + len(SPECIAL_TOKENS) + 1  # bpe.train refuses anything smaller
    checked(f"data.vocab_size={checks.MIN_VOCAB}")
    assert f">= {checks.MIN_VOCAB}" in refused(f"data.vocab_size={checks.MIN_VOCAB - 1}")


def test_optional_keys_unset_are_not_checked():
    cfg = checked()
    for key in ("allowance_seconds", "grace_seconds", "warmup_tokens"):
        assert cfg["budget"][key] is None
    assert cfg["eval"]["probe_tolerance"] is None and cfg["keep"]["threshold"] is None
    checked("budget.allowance_seconds=0", "budget.grace_seconds=0", "budget.warmup_tokens=0", "keep.threshold=0")


def test_a_wall_budget_above_max_seconds_needs_force():
    msg = refused("budget.mode=wall", "budget.seconds=1e9")
    assert "budget.seconds=1e+09" in msg and "budget.max_seconds=7200" in msg and "budget.force=true" in msg
    assert checked("budget.mode=wall", "budget.seconds=1e9", "budget.force=true")["budget"]["seconds"] == 1e9
    assert checked("budget.mode=wall", "budget.seconds=7200")["budget"]["seconds"] == 7200
    checked("budget.mode=normalized", "budget.seconds=1e9")  # unused outside wall mode: only its range counts


def test_min_seconds_above_max_seconds_is_refused():
    msg = refused("budget.min_seconds=100", "budget.max_seconds=50")
    assert "budget.min_seconds=100" in msg and "budget.max_seconds=50" in msg


@pytest.mark.parametrize("over,needle", [
    (["model.head_dim=63"], "model.head_dim=63: must be even"),
    (["model.width=200"], "model.width=200: must be a multiple of model.head_dim=64"),
    (["model.total_batch_size=3000"], "model.total_batch_size=3000: must be a multiple of"),
    (["model.device_batch_size=3"], "= 3 x 256 = 768"),
    (["model.window_pattern=SXL"], "model.window_pattern='SXL'"),
    (["model.window_pattern=''"], "model.window_pattern=''"),
])
def test_model_shapes_the_trainer_asserts_are_refused(over, needle):
    assert needle in refused(*over)


def test_model_shapes_the_trainer_takes_pass():
    cfg = checked("model.window_pattern=sssl", "model.total_batch_size=4096", "model.width=320")
    assert cfg["model"]["window_pattern"] == "sssl"  # train.py upper-cases it


@pytest.mark.parametrize("tag", ["", "a/b", "a b", "-x", ".hidden", "a..b", "x.lock", "x.", "a:b", "a~1", "q?",
                                 "a*", "a[1]", "a\\b", "x@{1}", "tab\there"])
def test_campaign_tags_git_or_a_directory_would_refuse(tag):
    assert refused(f"campaign.tag='{tag}'").startswith("campaign.tag=")


@pytest.mark.parametrize("tag", ["nov30", "20261130", "lr-sweep_2", "v1.2", "a@b", "ümlaut"])
def test_campaign_tags_that_are_fine(tag):
    assert checked(f"campaign.tag='{tag}'")["campaign"]["tag"] == tag


def test_threads_above_the_cores_are_capped_with_one_warning(monkeypatch):
    monkeypatch.setattr(checks, "available_cores", lambda: 2)
    cfg = compose_dict("experiment", ["backend=cpu", "backend.threads=64"])
    lines = []
    out = validate(cfg, log=lines.append)
    assert out["backend"]["threads"] == 2
    assert lines == ["backend.threads=64 is more than the 2 cores available: using 2"]
    assert cfg["backend"]["threads"] == 64  # the caller's dict is not changed
    assert validate(compose_dict("experiment", ["backend.threads=2"]), log=pytest.fail)["backend"]["threads"] == 2
    assert validate(compose_dict("experiment", []), log=pytest.fail)["backend"]["threads"] is None


def test_available_cores_is_this_process_share():
    import os

    n = checks.available_cores()
    assert 1 <= n <= (os.cpu_count() or n)
    if hasattr(os, "sched_getaffinity"):
        assert n == len(os.sched_getaffinity(0))


def test_unknown_plus_keys_pass_hydra_but_not_check_overrides():
    assert compose_dict("experiment", ["+foo=1"])["foo"] == 1  # Hydra adds it without a word
    assert compose_dict("experiment", ["++budget.secnds=5"])["budget"]["secnds"] == 5
    for over in (["+foo=1"], ["++budget.secnds=5"], ["+budget.seconds.x=1"], ["+agent.exclude.0=X"]):
        with pytest.raises(ConfigError) as e:
            check_overrides(["experiment", *over])
        key = over[0].lstrip("+").split("=")[0]
        assert str(e.value) == (f"unknown config key {key!r} (from {over[0]!r}): "
                                f"`autoresearch experiment --help` lists the keys")


@pytest.mark.parametrize("arg", [
    "++budget.seconds=5", "+agent.bounds.LR=[0.1,1]", "+agent.choices.ACTIVATION=[relu,gelu]",
    "++agent.prices.claude-x={input:1,output:5}", "+hydra.job.env_set.X=1", "budget.seconds=5",
    "+agent.bounds={LR:[0.1,1]}", "description='+a=b'",
])
def test_known_keys_and_dict_fields_are_accepted(arg):
    check_overrides(["experiment", arg])
    compose_dict("experiment", [arg])  # and Hydra takes them too


def test_group_overrides_and_syntax_errors_are_left_to_hydra():
    check_overrides(["+hydra/launcher=basic", "+agent=claude", "+x=[1,", "--help", "-m"])


def test_check_overrides_without_a_verb():
    with pytest.raises(ConfigError, match=r"`autoresearch <verb> --help`"):
        check_overrides(["+foo=1"])
    with pytest.raises(ConfigError, match=r"`autoresearch run --help`"):
        check_overrides(["+foo=1"], "run")


GOOD_CAL = {"id": "0123456789ab", "created": time.time(), "created_iso": "2026-11-30T00:00:00+00:00",
            "device": "Lab A100", "preset": "tiny", "tokens_per_s": 500.0, "cv": 0.01, "format": calibration.FORMAT,
            "startup_seconds": 2.0, "probe_noise": None, "noise": {"runs": 3, "std": 0.01, "mean": 1.5}}


@pytest.mark.parametrize("bad,problem", [
    ({"tokens_per_s": "fast"}, "tokens_per_s is a string, expected a number"),
    ({"tokens_per_s": 0}, "tokens_per_s is 0, expected a number > 0"),
    ({"created": None}, "created is null, expected a number"),
    ({"created": float("nan")}, "created is nan, expected a number"),
    ({"cv": True}, "cv is a boolean, expected a number"),
    ({"preset": 3}, "preset is an integer, expected a string"),
    ({"startup_seconds": "2"}, "startup_seconds is a string, expected a number or null"),
    ({"noise": {"runs": "3"}}, "noise.runs is a string, expected an integer"),
    ({"noise": []}, "noise is a list, expected an object or null"),
])
def test_calibration_problem_names_the_field_and_types(bad, problem):
    assert calibration_problem(GOOD_CAL) == ""
    assert calibration_problem({**GOOD_CAL, **bad}) == problem


def test_calibration_problem_of_a_missing_field_or_no_object():
    assert calibration_problem({k: v for k, v in GOOD_CAL.items() if k != "id"}) == "id is missing"
    assert calibration_problem([GOOD_CAL]) == "the file holds a list, not a JSON object"
    assert calibration_problem("x") == "the file holds a string, not a JSON object"


def test_a_cached_calibration_with_wrong_types_is_invalid(tmp_path):
    path = tmp_path / "cpu-tiny-0123456789ab.json"
    ccfg = compose_dict("calibrate", [])["calibrate"]
    path.write_text(json.dumps(GOOD_CAL))
    assert calibration.validity(calibration_store.load(path), ccfg, path) == ""
    for bad, problem in [({"tokens_per_s": "fast"}, "tokens_per_s is a string, expected a number"),
                         ({"created": None}, "created is null, expected a number")]:
        path.write_text(json.dumps({**GOOD_CAL, **bad}))
        why = calibration.validity(calibration_store.load(path), ccfg, path)
        assert why == f"the cached calibration at {path} is unreadable ({problem})"
    path.write_text(json.dumps([GOOD_CAL]))
    assert "not a JSON object" in calibration.validity(calibration_store.load(path), ccfg, path)


def test_calibrate_measures_again_over_a_cached_file_of_wrong_types(tmp_path, monkeypatch):
    """calibrate() with the measurement stubbed: the broken cache file is replaced."""
    import backends

    monkeypatch.setattr(calibration, "_measure", lambda cfg, bk, log, stretch=1.0: {"tokens_per_s": 1000.0, "cv": 0.01})
    cfg = compose_dict("calibrate", ["backend=cpu", "model=tiny", f"data.cache_dir={tmp_path}"])
    bk = backends.activate("cpu", None)
    path = calibration.default_path(cfg, bk, calibration.calibration_id(calibration.identity(cfg, bk)))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**GOOD_CAL, "tokens_per_s": "fast"}))
    lines = []
    cal = calibration.calibrate(cfg, log=lines.append)
    assert f"calibrate: the cached calibration at {path} is unreadable (tokens_per_s is a string" in lines[0]
    assert cal["tokens_per_s"] == 1000.0 and json.loads(path.read_text())["tokens_per_s"] == 1000.0


def test_a_reference_calibration_with_wrong_types_is_a_budget_error(tmp_path, monkeypatch):
    own = {**GOOD_CAL, "tokens_per_s": 1000.0}
    path = tmp_path / "lab.json"
    path.write_text(json.dumps({**GOOD_CAL, "tokens_per_s": "fast"}))
    cfg = compose_dict("experiment", ["model=tiny", f"budget.reference={path}", "budget.reference_seconds=20"])
    with pytest.raises(B.BudgetError) as e:
        B.resolve(cfg, own)
    assert str(e.value) == (f"budget.reference={path}: the calibration at {path} is unreadable "
                            f"(tokens_per_s is a string, expected a number)")
    path.write_text(json.dumps(GOOD_CAL))
    assert B.resolve(cfg, own).seconds == pytest.approx(10.0)  # the same file, fixed
    # by id, from the calibration cache
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path))
    (tmp_path / "calibration").mkdir()
    (tmp_path / "calibration" / "cuda-tiny-0123456789ab.json").write_text(json.dumps({**GOOD_CAL, "preset": None}))
    with pytest.raises(B.BudgetError, match=r"unreadable \(preset is null, expected a string\)"):
        B.resolve(compose_dict("experiment", ["model=tiny", "budget.reference=0123456789ab"]), own)
