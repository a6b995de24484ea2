"""`autoresearch kernels check`: every Triton kernel against its reference, judged here.

    autoresearch kernels check backend=cpu            (Triton's interpreter: TRITON_INTERPRET=1)
    autoresearch kernels check kernels.only=[rms_norm]

1. The kernel files are read against the static rules (harness/kernel_rules.py).
2. This process draws every case's inputs from fixed seeds (harness/kernel_cases.py) and
   computes the references' outputs and gradients itself.
3. A sandboxed child (harness/kernel_probe.py) runs the Triton implementations on them
   (on a CPU through Triton's interpreter), with the adversarial sequence described
   there: a dropped first call, fresh inputs, inputs overwritten in place.
4. Here, each result is compared with the reference: outputs and every gradient within
   the dtype's tolerance, NaN and inf where the reference has them, the inputs as given,
   and no torch operator computing what the kernel should.
`kernels_dir`: a campaign's copy of kernels/ (scope=kernels), put first on the child's path.
"""
from __future__ import annotations

import importlib.util
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

import backends
from harness import isolation, kernel_rules, proc, workdir
from harness.guard import ROOT
from harness.kernel_cases import Case, cases

# the dispatch and the references define correct: never the candidate's to change (a
# campaign refuses edits to them, harness/campaign.py IMMUTABLE; the rules skip them)
FIXED_FILES = {"reference.py", "registry.py", "__init__.py", "hub.py"}
GPU_BACKENDS = ("cuda", "rocm")  # where Triton compiles; elsewhere its interpreter runs the kernels


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)  # each: "kernel case: what is wrong"
    passed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = (f"kernels check: {len(self.passed)} case(s) passed" if self.ok else
                f"kernels check: FAILED: {len(self.problems)} problem(s), {len(self.passed)} case(s) passed")
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


def static_problems(kernels_dir: Path) -> list[str]:
    out = []
    for path in sorted(kernels_dir.glob("*.py")):
        if path.name not in FIXED_FILES:
            out += kernel_rules.check_source(path.read_text(), f"kernels/{path.name}")
    return out


def _close(got: torch.Tensor | None, want: torch.Tensor, tol: tuple[float, float]) -> str:
    """'' when `got` matches `want` (NaN and inf where it has them), else why not."""
    if got is None:
        return "missing"
    if got.shape != want.shape:
        return f"shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    g, w = got.float(), want.float()
    if not torch.equal(torch.isnan(g), torch.isnan(w)):
        return f"NaN at {int((torch.isnan(g) != torch.isnan(w)).sum())} place(s) where the reference differs"
    inf_g, inf_w = torch.isinf(g), torch.isinf(w)
    if not torch.equal(inf_g, inf_w) or not torch.equal(g[inf_g], w[inf_w]):
        return "inf where the reference differs"
    finite = torch.isfinite(w)
    err = (g[finite] - w[finite]).abs()
    limit = tol[0] + tol[1] * w[finite].abs()
    if err.numel() and bool((err > limit).any()):
        worst = int(torch.argmax(err - limit))
        return (f"{int((err > limit).sum())} of {err.numel()} values off (worst |diff| {float(err[worst]):.3g} "
                f"where {float(limit[worst]):.3g} is allowed)")
    return ""


def judge(case: Case, given: dict, result: dict) -> list[str]:
    """What is wrong with one case's result, against references computed here."""
    where = f"{case.kernel} {case.label}"
    if "error" in result:
        return [f"{where}: raised {result['error']}"]
    problems = [f"{where}: the backward raised {result['backward_error']}"] if result.get("backward_error") else []
    want_b, _ = case.reference(given["b"])
    want_c, grads_c = case.reference(given["c"])
    checks = [("output (fresh inputs)", result["out_b"], want_b),
              ("output (inputs overwritten in place)", result["out_c"], want_c)]
    checks += [(f"grad of {k}", result["grads"].get(k), grads_c[k]) for k in case.grads]
    for what, got, want in checks:
        why = _close(got, want, case.tolerance)
        if why:
            problems.append(f"{where}: {what}: {why}")
    for name, draw in (("a", given["c"]), ("b", given["b"])):  # a was overwritten with c's values
        for k, v in draw.items():
            after = result["inputs_after"].get(f"{name}.{k}")
            if torch.is_tensor(v) and (after is None or not torch.equal(after.nan_to_num(), v.nan_to_num())):
                problems.append(f"{where}: modified its input {k}")
    if result["ops"]:
        problems.append(f"{where}: torch computed on the launch path ({', '.join(result['ops'])}): the kernel "
                        f"must compute its result itself")
    return problems


def run_child(cfg: dict, bk, iso, scratch: Path, kernels_dir: Path | None, argv: list[str], log_name: str):
    """`python -m ARGV` in `scratch`, sandboxed as training is, the dispatch forced to Triton
    and `kernels_dir` (a candidate's kernels) first on its path; on a CPU, Triton's
    interpreter runs the kernels. The completed process (harness/proc.py)."""
    overlay = [workdir.kernels_overlay(scratch, kernels_dir)] if kernels_dir else []
    env = {**proc.child_env(bk.NAME, cfg["backend"].get("threads"), None, None, overlay, kernels="triton"),
           **iso.env(scratch)}
    if bk.NAME not in GPU_BACKENDS:
        env["TRITON_INTERPRET"] = "1"
    cmd = iso.wrap([sys.executable, "-m", *argv], iso.training_policy(scratch, kernels_dir))
    return proc.run(cmd, cwd=scratch, env=env, limit=float(cfg["eval"]["timeout_seconds"]), log=scratch / log_name,
                    echo=False)


def run(cfg: dict, kernels_dir: Path | None = None, log=print) -> Report:
    if importlib.util.find_spec("triton") is None:
        raise RuntimeError("kernels check needs Triton, which is not installed here (a Linux-only dependency: "
                           "`pip install triton`); without it every kernel runs its reference")
    bk = backends.activate(cfg["backend"]["name"], cfg["backend"].get("threads"), cfg["backend"].get("device"))
    workdir.ensure_prepared(cfg["data"], log, who="kernels check")  # the sandbox's self-test reads the splits
    source = kernels_dir or ROOT / "kernels"
    report = Report(problems=static_problems(source))
    todo = cases(cfg["kernels"].get("only"))
    seed = int(cfg["kernels"]["seed"])
    given = [{d: c.inputs(seed + 3 * i + k) for k, d in enumerate("abc")} for i, c in enumerate(todo)]
    iso = isolation.choose(cfg, bk, log=log)
    with tempfile.TemporaryDirectory(prefix="autoresearch-kernels-") as tmp:
        scratch = Path(tmp)
        torch.save([{"kernel": c.kernel, "label": c.label, **g} for c, g in zip(todo, given)], scratch / "in.pt")
        log(f"kernels check: {len(todo)} case(s) on {bk.NAME}"
            + ("" if bk.NAME in GPU_BACKENDS else " (Triton's interpreter)") + f", isolation {iso.label}")
        res = run_child(cfg, bk, iso, scratch, kernels_dir, ["harness.kernel_probe", "in.pt", "out.pt"], "probe.log")
        if res.returncode != 0 or not (scratch / "out.pt").exists():
            tail = "\n".join(res.output.splitlines()[-20:])
            report.problems.append(f"the kernels' process failed ({'timed out' if res.timed_out else res.returncode})"
                                   f":\n{tail}")
            return report
        results = torch.load(scratch / "out.pt", weights_only=True)
    by_case = {(r.get("kernel"), r.get("label")): r for r in results if isinstance(r, dict)}
    for c, g in zip(todo, given):
        result = by_case.get((c.kernel, c.label))
        try:
            problems = judge(c, g, result) if result else [f"{c.kernel} {c.label}: no result"]
        except (TypeError, KeyError, AttributeError, RuntimeError) as e:  # the child's answer is not trusted
            problems = [f"{c.kernel} {c.label}: a malformed result ({type(e).__name__}: {e})"]
        report.problems += problems
        if not problems:
            report.passed.append(f"{c.kernel} {c.label}")
        log(f"kernels check: {'ok  ' if not problems else 'FAIL'} {c.kernel} {c.label}")
    return report

