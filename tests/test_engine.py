"""The supervised training engine: updates, schedule, early stopping, best weights, budget, resume."""

from __future__ import annotations

import pytest
import torch

from funcml import engine
from funcml.engine import Checkpoints, Plan, fit
from funcml.errors import TrainingDivergedError


def _problem(seed: int = 0):
    """A linear regression y = x w* (16 samples, 3 features), its model and optimizer."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 1)
    return x, y, net, torch.optim.SGD(net.parameters(), lr=0.05)


def _batches(epoch: int):
    order = torch.randperm(16, generator=torch.Generator().manual_seed(epoch))
    return [order[:8], order[8:]]


def test_updates_are_plain_sgd_steps_and_the_loss_is_the_weighted_mean():
    x, y, net, opt = _problem()
    w0, b0 = net.weight.detach().clone(), net.bias.detach().clone()
    run = fit(net, opt, lambda _e: [torch.arange(16)], lambda i: (((net(x[i]) - y[i]) ** 2).mean(), 4.0),
              Plan(rounds=1))
    with torch.no_grad():
        residual = x @ w0.T + b0 - y
        expected_w = w0 - 0.05 * (2 * residual * x).mean(0, keepdim=True)
        expected_loss = float((residual ** 2).mean())
    torch.testing.assert_close(net.weight.detach(), expected_w)
    assert run.history == [{"epoch": 1, "train_loss": pytest.approx(expected_loss, rel=1e-6)}]
    assert (run.rounds_done, run.steps_done, run.stopped_by) == (1, 1, "rounds")


def test_learning_rate_follows_step_and_round():
    x, y, net, opt = _problem()
    seen = []
    plan = Plan(rounds=3, lr_at=lambda step, rnd: 0.01 * (step + 1) + rnd)
    fit(net, opt, _batches, lambda i: ((net(x[i]) - y[i]) ** 2).mean(), plan,
        after_step=lambda step: seen.append((step, opt.param_groups[0]["lr"])))
    assert seen == [(s, pytest.approx(0.01 * (s + 1) + s // 2)) for s in range(6)]


def test_early_stopping_keeps_the_best_rounds_weights():
    x, y, net, opt = _problem()
    scores = iter([5.0, 3.0, 4.0, 3.5, 3.2, 1.0])
    weights = []

    def validate(_train_loss):
        weights.append(net.weight.detach().clone())
        return next(scores)

    run = fit(net, opt, _batches, lambda i: ((net(x[i]) - y[i]) ** 2).mean(),
              Plan(rounds=6, patience=3, score_name="val"), validate=validate)
    assert run.stopped_by == "patience" and run.rounds_done == 5
    assert (run.best_round, run.best_score) == (2, 3.0)
    assert [e["val"] for e in run.history] == [5.0, 3.0, 4.0, 3.5, 3.2]
    torch.testing.assert_close(net.weight.detach(), weights[1], rtol=0, atol=0)


def test_maximize_and_min_delta():
    x, y, net, opt = _problem()
    scores = iter([0.5, 0.55, 0.7])
    run = fit(net, opt, _batches, lambda i: ((net(x[i]) - y[i]) ** 2).mean(),
              Plan(rounds=3, maximize=True, min_delta=0.1), validate=lambda _l: next(scores))
    assert run.best_round == 3 and run.best_score == 0.7  # 0.55 is not better by more than 0.1


def test_a_non_finite_loss_stops_with_a_clear_error():
    x, y, net, opt = _problem()
    with pytest.raises(TrainingDivergedError, match="diverged at step 0"):
        fit(net, opt, _batches, lambda i: ((net(x[i]) - y[i]) ** 2).mean() * float("nan"),
            Plan(rounds=2, check_finite=True))


def test_an_interrupted_run_resumes_to_the_same_bits(tmp_path):
    x, y, net, opt = _problem()
    loss = lambda i: ((net(x[i]) - y[i]) ** 2).mean()  # noqa: E731
    whole = fit(net, opt, _batches, loss, Plan(rounds=4), validate=lambda l: l)
    w_whole = net.weight.detach().clone()

    x, y, net, opt = _problem()
    loss = lambda i: ((net(x[i]) - y[i]) ** 2).mean()  # noqa: E731
    ckpt = Checkpoints(tmp_path, identity={"run": 1})
    cut = fit(net, opt, _batches, loss, Plan(rounds=4, max_minutes=0.0), validate=lambda l: l, checkpoints=ckpt)
    assert cut.stopped_by == "max_minutes" and cut.rounds_done == 1

    x, y, net, opt = _problem()
    loss = lambda i: ((net(x[i]) - y[i]) ** 2).mean()  # noqa: E731
    resumed = fit(net, opt, _batches, loss, Plan(rounds=4), validate=lambda l: l, checkpoints=ckpt)
    assert resumed.resumed_from == 1 and resumed.rounds_done == 4
    assert resumed.history == whole.history and resumed.best_round == whole.best_round
    torch.testing.assert_close(net.weight.detach(), w_whole, rtol=0, atol=0)


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path):
    x, y, net, opt = _problem()
    loss = lambda i: ((net(x[i]) - y[i]) ** 2).mean()  # noqa: E731
    fit(net, opt, _batches, loss, Plan(rounds=2), checkpoints=Checkpoints(tmp_path, identity="a"))
    x, y, net, opt = _problem()
    run = fit(net, opt, _batches, loss, Plan(rounds=2), checkpoints=Checkpoints(tmp_path, identity="b"))
    assert run.resumed_from == 0 and run.rounds_done == 2


def _ticking_clock(monkeypatch, seconds_per_call: float) -> None:
    """Make the engine's process clock advance ``seconds_per_call`` on every reading."""
    ticks = iter(range(10 ** 6))
    monkeypatch.setitem(engine.CLOCKS, "process", lambda: seconds_per_call * next(ticks))


def test_a_cpu_time_budget_ends_the_round_and_the_schedule_follows_it(monkeypatch):
    _ticking_clock(monkeypatch, 6.0)  # one minute of budget = 10 readings
    x, y, net, opt = _problem()
    seen = []
    plan = Plan(rounds=2, max_minutes=1.0, clock="process", stop_within_round=True, lr_schedule=lambda p: p)
    run = fit(net, opt, lambda _r: [torch.arange(16)] * 100, lambda i: ((net(x[i]) - y[i]) ** 2).mean(), plan,
              after_step=lambda step: seen.append(opt.param_groups[0]["lr"]))
    # readings alternate before each step: the budget (6, 18, ...), then the schedule (12, 24, ...)
    assert seen == [pytest.approx(p) for p in (0.2, 0.4, 0.6, 0.8, 1.0)]
    assert (run.rounds_done, run.steps_done, run.stopped_by) == (1, 5, "max_minutes")


def test_the_schedule_follows_the_steps_without_a_budget():
    x, y, net, opt = _problem()
    seen = []
    plan = Plan(rounds=2, total_steps=4, lr_schedule=lambda p: 1.0 - p)
    fit(net, opt, _batches, lambda i: ((net(x[i]) - y[i]) ** 2).mean(), plan,
        after_step=lambda step: seen.append(opt.param_groups[0]["lr"]))
    assert seen == [1.0, 0.75, 0.5, 0.25]


def test_a_plan_with_an_unknown_clock_or_an_unbounded_schedule_is_refused():
    x, y, net, opt = _problem()
    with pytest.raises(ValueError, match="clock"):
        fit(net, opt, _batches, lambda i: net(x[i]).mean(), Plan(rounds=1, clock="gpu"))
    with pytest.raises(ValueError, match="total_steps"):
        fit(net, opt, _batches, lambda i: net(x[i]).mean(), Plan(rounds=1, lr_schedule=lambda p: 1.0))
