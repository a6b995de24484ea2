"""The `autoresearch` command: `autoresearch <verb> key=value ...`, one Hydra app per verb.

    autoresearch prepare data=builtin
    autoresearch experiment backend=cpu model=tiny budget.seconds=30
    autoresearch experiment --help          (Hydra's help: config groups and options)
    autoresearch run --multirun hydra/launcher=joblib backend=cuda backend.device=0,1

Also `python -m harness <verb> ...`. Each verb composes conf/<verb>.yaml; a bad override
(unknown key, unknown option, wrong type) stops with Hydra's message and exit code 1.
An error the user can fix ends with one line and exit code 2; Ctrl-C with 130, SIGTERM
with 143 (harness/stops.py), after the children are killed and the state is saved.
`--multirun` runs one job per combination of swept values through Hydra's launcher
(harness/fanout.py: each job's outcome is recorded, the launching process reports them).
"""
from __future__ import annotations

import errno
import sys
from pathlib import Path

from harness import fanout, stops
from harness.config import CONF_DIR, register, to_dict


EXIT_USAGE = 2  # a bad request (no traceback): bad budget, missing file, unavailable backend
_DESCRIPTION: str | None = None  # `record -m TEXT`: taken off the command line before Hydra parses it
_SUBVERB: str | None = None  # `kernels check` / `kernels bench`
KERNEL_VERBS = ("check", "bench")


class Exit(SystemExit):
    """SystemExit with the one line that said why (a multirun job's outcome keeps it)."""

    def __init__(self, code: int, line: str = ""):
        super().__init__(code)
        self.line = line


def _fail(verb: str, line: str, code: int) -> None:
    print(f"autoresearch {verb}: {line}", file=sys.stderr, flush=True)
    raise Exit(code, line)


def _os_problem(e: OSError) -> str:
    """One line for an operating-system error, with what to do about it."""
    where = f" ({e.filename})" if e.filename else ""
    if e.errno == errno.ENOSPC:
        return (f"no space left on the device{where}: free some space and run the same command again "
                f"(what was recorded before this is intact)")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write{where}: {e.strerror}: make it writable, or point data.cache_dir "
                f"($AUTORESEARCH_CACHE) or campaign.root elsewhere")
    return str(e)


def _user_errors(fn):
    """Errors a user can fix end with one clear line and exit code 2, never a traceback;
    an interrupted command says so and exits with 130 (Ctrl-C) or 143 (SIGTERM)."""
    import functools

    @functools.wraps(fn)
    def wrapper(cfg):
        verb = fn.__name__.strip("_")
        if fanout.in_multirun():  # one job of several: its outcome is recorded and the process goes on
            return fanout.job(lambda: _guarded(fn, verb, cfg), verb)
        return _guarded(fn, verb, cfg)

    return wrapper


def _guarded(fn, verb: str, cfg):
    from harness.agents import StopCampaign
    from harness.budget import BudgetError
    from harness.calibration import CalibrationError

    from harness import checks

    try:
        return fn(checks.validate(to_dict(cfg), log=lambda m: print(f"autoresearch {verb}: warning: {m}",
                                                                    file=sys.stderr, flush=True)))
    except KeyboardInterrupt as e:
        _fail(verb, f"{stops.reason(e)}: stopped (run the same command again)", stops.exit_code())
    except StopCampaign as e:
        _fail(verb, f"error: {e.message}", e.code or EXIT_USAGE)
    except OSError as e:
        _fail(verb, f"error: {_os_problem(e)}", EXIT_USAGE)
    except (BudgetError, CalibrationError, ValueError, RuntimeError) as e:
        _fail(verb, f"error: {e}", EXIT_USAGE)


@_user_errors
def _prepare(cfg) -> None:
    from harness import locks, workdir
    from trainer.prepare import prepare

    with locks.held(workdir.prepare_lock(cfg["data"]), waiting=lambda: print(
            f"prepare: waiting for another process preparing data={cfg['data']['name']} ...", flush=True)):
        prepare(cfg["data"])


@_user_errors
def _calibrate(cfg) -> None:
    from harness import budgeting, calibration

    cal = budgeting.calibrated(cfg)
    print("device benchmark\n" + calibration.table(cal), flush=True)


@_user_errors
def _experiment(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from harness import budgeting, experiment

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fanout.note(run=run_dir.resolve())
    budget, cal = budgeting.decide(cfg)
    print(f"experiment: {budgeting.cost_line(budget, cal)}", flush=True)
    out = experiment.run(cfg, run_dir, budget, own_calibration=cal)
    code = experiment.report(out)
    raise Exit(code, f"{out['status']}: {out.get('reason')}" if code else f"val_bpb {out.get('val_bpb')}")


def _command_line_keys() -> set[str]:
    from hydra.core.hydra_config import HydraConfig

    from harness.fixed import override_keys

    return override_keys(list(HydraConfig.get().overrides.task))


def _open_campaign(cfg, reset: bool = True, agent: str | None = None, new: bool = True):
    """The campaign, opened; `new=False`: it must exist already (nothing is made)."""
    from harness.campaign import Campaign
    from harness.display import Display

    keys = _command_line_keys()
    c = Campaign(cfg, explicit=keys | {"agent"} if agent else keys, agent=agent)
    fanout.note(dir=c.dir, branch=c.branch, slot=c.slot)
    if not new and not c.exists():
        raise FileNotFoundError(f"no campaign at {c.dir}: start it with `autoresearch run agent=external "
                                f"campaign.tag={c.cfg['campaign']['tag']} campaign.root={c.root}`")
    c.open(reset=reset)
    display = Display()
    for note in c.notes:
        display.note(note)
    display.note(f"campaign: {c.dir} | branch {c.branch} | agent {c.agent_name} | scope {c.cfg['scope']} "
                 f"| {len(c.ledger)} experiments so far")
    return c, display


def _finish(c, why: str, code: int = 0) -> None:
    fanout.note(why=why)
    print(f"campaign: stopped: {why}\n{c.report()}", flush=True)
    if code:
        line = f"the campaign stopped early (exit code {code}): {why}"
        print(f"autoresearch: {line}", file=sys.stderr, flush=True)
        raise Exit(code, line)


def _campaign_step(c, step) -> None:
    """Run `step` (the loop, or one record), unlock, report; Ctrl-C and SIGTERM end it
    with the state saved, as any stop does (the same command resumes)."""
    try:
        why, code = step()
    except KeyboardInterrupt as e:
        why, code = f"{stops.reason(e)} (run the same command to resume)", stops.exit_code()
    finally:
        c.unlock()
    _finish(c, why, code)
    if c.agent_name == "external":
        print(external_protocol(c), flush=True)


@_user_errors
def _run(cfg) -> None:
    c, display = _open_campaign(cfg)
    _campaign_step(c, lambda: c.run(display))


def external_protocol(c) -> str:
    """The external agent's instructions, with every setting its commands need."""
    from harness.slot import overrides

    b, tag, root = c.budget, c.cfg["campaign"]["tag"], c.root
    where = f"campaign.root={root} campaign.tag={tag} " + " ".join(overrides(c.bk.NAME, c.cfg["backend"]))
    budget = (f"budget.mode={b.mode} "
              + (f"budget.seconds={c.cfg['budget']['seconds']:g}" if b.mode == "wall"
                 else f"budget.reference_seconds={c.cfg['budget']['reference_seconds']:g}")) if b else ""
    return f"""
external agent protocol (program.md):
  1. edit files in {c.tree} (scope={c.cfg['scope']}; changes elsewhere are refused and set aside)
  2. autoresearch record -m "what you changed" {where} {budget}
     (commits, runs one experiment under the campaign's budget, keeps or reverts, records it;
     -m takes any text: commas, parentheses and quotes need no escaping)
  3. autoresearch ledger {where}      (the results so far, the best)"""


@_user_errors
def _record(cfg) -> None:
    c, display = _open_campaign(cfg, reset=False, agent="external", new=False)  # `record` is the external agent's step
    description = _DESCRIPTION if _DESCRIPTION is not None else c.cfg["description"]
    _campaign_step(c, lambda: (c.record(description, display), 0))


@_user_errors
def _ledger(cfg) -> None:
    from harness.campaign import Campaign

    c = Campaign.report_only(cfg)
    fanout.note(dir=c.dir, branch=c.branch, slot=c.slot)
    print(c.report(), flush=True)


@_user_errors
def _replay(cfg) -> None:
    from harness import replay

    replay.main(cfg, _command_line_keys())
    raise SystemExit(0)


@_user_errors
def _report(cfg) -> None:
    from harness.report import build

    build.run(cfg, log=lambda m: print(m, flush=True))
    raise SystemExit(0)


@_user_errors
def _kernels(cfg) -> None:
    if _SUBVERB == "check":
        from harness import kernel_check

        report = kernel_check.run(cfg)
        print(report.summary(), flush=True)
        raise SystemExit(0 if report.ok else 1)
    from harness import kernel_bench

    kernel_bench.run(cfg)
    raise SystemExit(0)


VERBS = {
    "prepare": (_prepare, "download/extract the corpus and train the tokenizer (cached)"),
    "calibrate": (_calibrate, "measure this device (matmul, bandwidth, reference-workload tokens/s); cached"),
    "experiment": (_experiment, "run train.py once under the budget; print and save the summary"),
    "run": (_run, "run (or resume) a campaign: agent edits, experiment, keep or revert, repeat"),
    "record": (_record, "external agent: commit the work tree's edits, run and record one experiment"),
    "ledger": (_ledger, "show a campaign's ledger and its best kept experiment"),
    "replay": (_replay, "measure another campaign's kept discoveries on this device: its transfer matrix"),
    "report": (_report, "figures and tables of campaigns (every one under campaign.root): report.html, report.md, PNGs"),
    "kernels": (_kernels, "kernels check: each Triton kernel against its reference; kernels bench: their speed"),
}
CONFIG_OF = {"record": "run", "ledger": "run", "replay": "run"}  # verbs that share another verb's config


def usage() -> str:
    lines = ["usage: autoresearch <verb> [key=value ...]   (Hydra overrides; <verb> --help for options)", "", "verbs:"]
    lines += [f"  {name:<12}{doc}" for name, (_, doc) in VERBS.items()]
    return "\n".join(lines)


def take_description(args: list[str]) -> tuple[list[str], str | None]:
    """`record`'s description, taken off the command line as written: `-m TEXT`,
    `--message TEXT`, `--message=TEXT` or `description=TEXT`, so that commas, brackets,
    quotes and `=` in it never meet Hydra's override grammar."""
    rest, text, i = [], None, 0
    while i < len(args):
        a = args[i]
        if a in ("-m", "--message"):
            if i + 1 >= len(args):
                print(f"autoresearch record: error: {a} needs the description after it", file=sys.stderr)
                raise SystemExit(EXIT_USAGE)
            text, i = args[i + 1], i + 2
            continue
        for prefix in ("--message=", "description="):
            if a.startswith(prefix):
                text = a[len(prefix):]
                break
        else:
            rest.append(a)
        i += 1
    return rest, text


def main(argv: list[str] | None = None) -> None:
    import hydra

    global _DESCRIPTION, _SUBVERB
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"autoresearch: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    if verb == "record":
        rest, _DESCRIPTION = take_description(rest)
    if verb == "kernels":
        if not rest or rest[0] not in KERNEL_VERBS:
            print("autoresearch kernels: say what: `autoresearch kernels check` or `autoresearch kernels bench`",
                  file=sys.stderr)
            raise SystemExit(EXIT_USAGE)
        _SUBVERB, rest = rest[0], rest[1:]
    from harness.checks import ConfigError, check_overrides

    try:  # Hydra adds unknown `+key=` overrides without a word: refused, as any unknown key
        check_overrides(rest, verb)
    except ConfigError as e:
        print(f"autoresearch {verb}: error: {e}", file=sys.stderr)
        raise SystemExit(1)
    if verb not in fanout.MULTIRUN_VERBS and any(a in ("--multirun", "-m") for a in rest):
        print(f"autoresearch {verb}: error: --multirun fans out {', '.join(fanout.MULTIRUN_VERBS)} only; "
              f"run `{verb}` once per setting", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    stops.install()
    register()
    sys.argv = [f"autoresearch {verb}"] + rest
    app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=CONFIG_OF.get(verb, verb))(VERBS[verb][0])
    fanout.sweep_dir = None
    _launch(app)


def _launch(app) -> None:
    """Run the Hydra app; after a multirun, report every job and exit with their code
    (harness/fanout.py): Hydra itself would exit 0 whatever its jobs did."""
    raised = None
    try:
        app()
    except (SystemExit, KeyboardInterrupt) as e:
        if fanout.sweep_dir is None:
            raise
        raised = e
    if fanout.sweep_dir is None:
        return
    text, code = fanout.summary(fanout.sweep_dir, jobs_failed=isinstance(raised, SystemExit) and bool(raised.code))
    print(text, flush=True)
    if isinstance(raised, KeyboardInterrupt):
        code = stops.exit_code()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
