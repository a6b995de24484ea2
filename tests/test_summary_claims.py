"""train.py's own `---` block is printed as its claims (`train.<key>`) at full precision: its
figures are numbers in summary.json and the printed line reads back as the same number."""
from harness import experiment, summary

TRAIN_OUTPUT = """step 10 | loss 3.2
---
val_bpb:          0.0123
training_seconds: 300.123456
num_steps:        953
mfu_percent:      39.80
tiny:             1e-07
note:             fp32 everywhere
"""


def block_lines(text: str) -> dict:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()[1:])}


def test_claims_keep_their_precision_from_parse_to_print(tmp_path, capsys):
    claims = summary.parse(TRAIN_OUTPUT)
    assert claims == {"val_bpb": 0.0123, "training_seconds": 300.123456, "num_steps": 953, "mfu_percent": 39.8,
                      "tiny": 1e-07, "note": "fp32 everywhere"}
    out = {"status": "ok", "val_bpb": 1.23456789, "training_seconds": 300.04, "run_dir": str(tmp_path),
           "train": claims}
    assert experiment.report(out) == 0
    printed = block_lines(capsys.readouterr().out.split("\nexperiment: summary written")[0])
    assert printed["train.val_bpb"] == "0.0123" and printed["train.training_seconds"] == "300.123456"
    assert printed["train.num_steps"] == "953" and printed["train.note"] == "fp32 everywhere"
    assert printed["train.mfu_percent"] == "39.8" and float(printed["train.tiny"]) == 1e-07
    # the harness's own fields keep their fixed formats
    assert printed["val_bpb"] == "1.234568" and printed["training_seconds"] == "300.0"


def test_non_finite_claims_print_as_written():
    block = summary.format_block({"train.val_bpb": float("nan"), "train.loss": float("inf")})
    assert block_lines(block) == {"train.val_bpb": "nan", "train.loss": "inf"}
