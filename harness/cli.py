"""The `autoresearch` command: `autoresearch <verb> key=value ...`, one Hydra app per verb.

    autoresearch prepare data=builtin
    autoresearch experiment backend=cpu model=tiny budget.seconds=30
    autoresearch experiment --help          (Hydra's help: config groups and options)

Also `python -m harness <verb> ...`. Each verb composes conf/<verb>.yaml; a bad override
(unknown key, unknown option, wrong type) stops with Hydra's message and exit code 1.
"""
from __future__ import annotations

import sys
from pathlib import Path

from harness.config import CONF_DIR, register, to_dict


EXIT_USAGE = 2  # a bad request (no traceback): bad budget, missing file, unavailable backend


def _user_errors(fn):
    """Errors a user can fix end with one clear line and exit code 2, never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(cfg):
        from harness.budget import BudgetError
        from harness.calibration import CalibrationError

        try:
            return fn(cfg)
        except (BudgetError, CalibrationError, FileNotFoundError, ValueError, RuntimeError) as e:
            print(f"autoresearch {fn.__name__.strip('_')}: error: {e}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE)

    return wrapper


@_user_errors
def _prepare(cfg) -> None:
    from trainer.prepare import prepare

    prepare(to_dict(cfg)["data"])


@_user_errors
def _calibrate(cfg) -> None:
    from harness import calibration

    cal = calibration.calibrate(to_dict(cfg))
    print("device benchmark\n" + calibration.table(cal), flush=True)


@_user_errors
def _experiment(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from harness import experiment

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    out = experiment.run(to_dict(cfg), run_dir)
    raise SystemExit(experiment.report(out))


VERBS = {
    "prepare": (_prepare, "download/extract the corpus and train the tokenizer (cached)"),
    "calibrate": (_calibrate, "measure this device (matmul, bandwidth, reference-workload tokens/s); cached"),
    "experiment": (_experiment, "run train.py once under the budget; print and save the summary"),
}


def usage() -> str:
    lines = ["usage: autoresearch <verb> [key=value ...]   (Hydra overrides; <verb> --help for options)", "", "verbs:"]
    lines += [f"  {name:<12}{doc}" for name, (_, doc) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import hydra

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"autoresearch: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    register()
    sys.argv = [f"autoresearch {verb}"] + rest
    app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=verb)(VERBS[verb][0])
    app()


if __name__ == "__main__":
    main()
