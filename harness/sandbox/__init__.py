"""Run untrusted commands (the agent's train.py) confined: Landlock + seccomp on Linux,
sandbox-exec on macOS.

    from harness import sandbox
    sup = sandbox.support()                      # cached; sup.kind == "none" -> cannot sandbox
    policy = sandbox.base_policy("cuda").merged(sandbox.Policy(
        read=(str(workspace), str(train_split)), write=(str(scratch),)))
    env = {**os.environ, **sandbox.scratch_env(scratch)}
    subprocess.Popen(sandbox.wrap([sys.executable, "train.py"], policy), env=env, cwd=scratch,
                     start_new_session=True)
    problems = sandbox.selftest(policy, deny_read=[val_split], device_code="import torch")

Linux: wrap() runs launch.py first, which drops all capabilities, sets no_new_privs, applies
Landlock (file access limited to the policy, TCP denied, signals and abstract sockets
scoped to the sandbox) and a seccomp filter (no sockets, no SysV/POSIX IPC, no ptrace, no
namespaces; setsid/setpgid succeed without effect, so one killpg stops everything), then
execs the command. Paths in a policy that do not exist are skipped.
"""
from harness.sandbox.policy import (BACKENDS, LAUNCH, SCRATCH_VARS, Policy, SandboxUnavailable, Support,
                                    base_policy, scratch_env, support, wrap)
from harness.sandbox.selftest import selftest

__all__ = ["BACKENDS", "LAUNCH", "SCRATCH_VARS", "Policy", "SandboxUnavailable", "Support", "base_policy",
           "scratch_env", "selftest", "support", "wrap"]
