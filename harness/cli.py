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


def _open_campaign(cfg, reset: bool = True):
    from harness.campaign import Campaign
    from harness.display import Display

    c = Campaign(to_dict(cfg))
    c.open(reset=reset)
    display = Display()
    display.note(f"campaign: {c.dir} | branch {c.branch} | agent {c.agent_name} | scope {c.cfg['scope']} "
                 f"| {len(c.ledger)} experiments so far")
    return c, display


def _finish(c, why: str, code: int = 0) -> None:
    print(f"campaign: stopped: {why}\n{c.report()}", flush=True)
    if code:
        raise SystemExit(code)


@_user_errors
def _run(cfg) -> None:
    c, display = _open_campaign(cfg)
    try:
        why, code = c.run(display), 0
    except KeyboardInterrupt:
        why, code = "interrupted (run the same command to resume)", 130
    finally:
        c.unlock()
    _finish(c, why, code)
    if c.agent_name == "external":
        print(EXTERNAL_PROTOCOL.format(tree=c.tree, tag=c.cfg["campaign"]["tag"], backend=c.bk.NAME,
                                       scope=c.cfg["scope"]), flush=True)


EXTERNAL_PROTOCOL = """
external agent protocol (program.md):
  1. edit files in {tree} (scope={scope}; changes elsewhere are reverted and refused)
  2. autoresearch record description="what you changed" campaign.tag={tag} backend={backend}
     (commits, runs one experiment under the calibrated budget, keeps or reverts, records it)
  3. autoresearch ledger campaign.tag={tag} backend={backend}      (the results so far, the best)"""


@_user_errors
def _record(cfg) -> None:
    from harness.campaign import ScopeViolation

    c, display = _open_campaign(cfg, reset=False)
    tag = c.cfg["campaign"]["tag"]
    try:
        if c.state.get("pending"):
            raise RuntimeError(f"an interrupted experiment is pending: finish it first with `autoresearch run "
                               f"agent=external campaign.tag={tag}` (it re-runs it; your edits would be reset)")
        if c.ledger.next_seq() == 0:
            raise RuntimeError(f"no baseline yet: start with `autoresearch run agent=external campaign.tag={tag}`")
        c.prepare_budget()
        c.cycle(None, "", display, description=c.cfg["description"] or "(no description)")
        why, code = "recorded", 0
    except ScopeViolation as e:
        raise RuntimeError(e.message) from None
    except KeyboardInterrupt:
        why, code = "interrupted", 130
    finally:
        c.unlock()
    _finish(c, why, code)


@_user_errors
def _ledger(cfg) -> None:
    from harness.campaign import Campaign
    from harness.ledger import Ledger

    c = Campaign(to_dict(cfg))
    if not (c.dir / "results.jsonl").exists():
        raise FileNotFoundError(f"no campaign at {c.dir} (campaign.tag={c.cfg['campaign']['tag']}, backend={c.bk.NAME})")
    c.ledger = Ledger(c.dir)
    print(c.report(), flush=True)


VERBS = {
    "prepare": (_prepare, "download/extract the corpus and train the tokenizer (cached)"),
    "calibrate": (_calibrate, "measure this device (matmul, bandwidth, reference-workload tokens/s); cached"),
    "experiment": (_experiment, "run train.py once under the budget; print and save the summary"),
    "run": (_run, "run (or resume) a campaign: agent edits, experiment, keep or revert, repeat"),
    "record": (_record, "external agent: commit the work tree's edits, run and record one experiment"),
    "ledger": (_ledger, "show a campaign's ledger and its best kept experiment"),
}
CONFIG_OF = {"record": "run", "ledger": "run"}  # verbs that share another verb's config


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
    app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=CONFIG_OF.get(verb, verb))(VERBS[verb][0])
    app()


if __name__ == "__main__":
    main()
