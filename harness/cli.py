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


def _prepare(cfg) -> None:
    from trainer.prepare import prepare

    prepare(to_dict(cfg)["data"])


def _experiment(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from harness import experiment

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    out = experiment.run(to_dict(cfg), run_dir)
    raise SystemExit(experiment.report(out))


VERBS = {
    "prepare": (_prepare, "download/extract the corpus and train the tokenizer (cached)"),
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
