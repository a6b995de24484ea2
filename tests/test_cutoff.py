"""The cut-off rule end to end: an honest run whose last step ends past the budget is
credited (with its overshoot said), a run that keeps training on its own past the room
its own steps give it is cut off. The fakes here train until the harness's budget says
stop, one step per batch, with each step made slow on purpose (a slow CPU's steps)."""
import pytest

from tests import fakes
from tests.conftest import experiment

pytestmark = pytest.mark.slow
NO_WARMUP = "budget.warmup_tokens=0"


def budget_loop(step_sleep: float, then: str = "", first_sleep: float | None = None) -> str:
    return f'''
n = 0
while prepare.budget_progress(0.0, 0) < 1:
    x, y, _ = next(loader)
    time.sleep({first_sleep if first_sleep is not None else step_sleep} if n == 2 else {step_sleep})
    loss = F.cross_entropy(model(x).view(-1, VOCAB_SIZE), y.view(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    n += 1
{then}
'''


# after the budget: train on the last batch, with no request, for 10 s
KEEP_TRAINING = '''
t_end = time.time() + 10
while time.time() < t_end:
    loss = F.cross_entropy(model(x).view(-1, VOCAB_SIZE), y.view(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
'''


def test_an_honest_run_whose_last_step_ends_past_the_budget_is_credited(cache_dir, tmp_path):
    # 2.2 s steps in a 5 s budget: progress is checked at ~2.2 and ~4.4 s, so the third
    # step ends ~1.6 s past the budget, more than the grace (1 s) alone would allow
    t = fakes.write(tmp_path / "t.py", steps=0, before_eval=budget_loop(2.2))
    res, s = experiment(tmp_path / "run", t, NO_WARMUP)
    assert s["status"] == "ok", s
    assert s["slowest_step_seconds"] >= 2.2 and s["overshoot_seconds"] > 1.0
    assert s["overshoot_seconds"] == pytest.approx(s["training_seconds"] - 5.0)


@pytest.mark.parametrize("widened", [False, True])
def test_training_on_its_own_past_the_budget_is_cut_off(cache_dir, tmp_path, widened):
    """Fast steps, then 10 s more on the last batch without asking for one; `widened`: one
    early step stalls 2 s first, so the room is 1.5 x 2 + 1 = 4 s: still less than 10."""
    loop = budget_loop(0.05, then=KEEP_TRAINING, first_sleep=2.0 if widened else None)
    res, s = experiment(tmp_path / "run", fakes.write(tmp_path / "t.py", steps=0, before_eval=loop), NO_WARMUP)
    assert s["status"] == "timeout" and s["val_bpb"] is None, s
    assert "room for its last step" in s["reason"] and res.returncode == 5
    assert s["training_seconds"] < 5.0 + (4.5 if widened else 2.0)  # stopped at its own room, not at 10 s
