"""Meta-training loop: learning, deterministic resume, interruption, divergence, output rules."""

import dataclasses
import json
import math
import os
import signal


import pytest
import torch

from funcml.encoders import trainer as trainer_mod
from funcml.encoders.model import FieldModel
from funcml.encoders.trainer import MetaTrainer, TrainingInterrupted, cosine_lr
from funcml.errors import ConfigError, OutputExistsError, TrainingDivergedError
from funcml.io import load_tensors


def _weights(out):
    meta = json.loads((out / "checkpoints" / "last.json").read_text())
    return load_tensors(out / "checkpoints" / meta["file"]), meta


def test_cosine_schedule_with_warmup():
    from funcml.encoders.config import TrainConfig

    cfg = TrainConfig(steps=100, outer_lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert cosine_lr(0, cfg) == pytest.approx(0.1)
    assert cosine_lr(9, cfg) == pytest.approx(1.0)
    assert cosine_lr(10, cfg) == pytest.approx(1.0)
    assert cosine_lr(55, cfg) == pytest.approx(0.55)
    assert cosine_lr(100, cfg) == pytest.approx(0.1)


def test_training_improves_reconstruction_and_keeps_best_model(tmp_path, tiny_images, tiny_field, tiny_train):
    cfg = dataclasses.replace(tiny_train, steps=40, val_every=10, outer_lr=3e-3)
    result = MetaTrainer(tiny_field, cfg, tiny_images, tmp_path / "m", progress=False).run()
    hist = [h for h in result.history if "psnr_outer" in h]
    assert hist[-1]["psnr_outer"] > hist[0]["psnr_outer"] + 2.0
    vals = [h["val_psnr"] for h in result.history if "val_psnr" in h]
    assert len(vals) == 4 and result.best_val_psnr == pytest.approx(max(vals))
    model = FieldModel.load(tmp_path / "m")
    assert model.training["val_psnr"] == pytest.approx(result.best_val_psnr)
    assert model.training["step"] == result.best_step
    assert (tmp_path / "m" / "training_curves.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["median_step_seconds"] > 0 and summary["peak_memory_bytes"] > 0
    from funcml.backends import native

    assert summary["fused_loops"] == native.available()   # auto on a CPU: the C loops wherever they are built


def test_resume_after_a_crash_continues_the_same_trajectory(tmp_path, tiny_images, tiny_field, tiny_train, monkeypatch):
    MetaTrainer(tiny_field, tiny_train, tiny_images, tmp_path / "a", progress=False).run()
    ref, ref_meta = _weights(tmp_path / "a")

    real = trainer_mod.cosine_lr

    def crash_at_7(step, cfg):
        if step == 7:
            raise RuntimeError("simulated crash")  # like SIGKILL: no checkpoint beyond step 4
        return real(step, cfg)

    monkeypatch.setattr(trainer_mod, "cosine_lr", crash_at_7)
    with pytest.raises(RuntimeError):
        MetaTrainer(tiny_field, tiny_train, tiny_images, tmp_path / "b", progress=False).run()
    assert _weights(tmp_path / "b")[1]["step"] == 4
    monkeypatch.setattr(trainer_mod, "cosine_lr", real)
    result = MetaTrainer(tiny_field, tiny_train, tiny_images, tmp_path / "b", progress=False).run()
    assert result.resumed_from == 4
    got, meta = _weights(tmp_path / "b")
    assert meta["step"] == 12 and meta["finished"]
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    untimed = lambda hist: [{k: v for k, v in h.items() if k != "seconds"} for h in hist]  # noqa: E731
    assert untimed(meta["history"]) == untimed(ref_meta["history"])


def test_sigint_checkpoints_between_steps_and_resumes_identically(tmp_path, tiny_images, tiny_field, tiny_train, monkeypatch):
    MetaTrainer(tiny_field, tiny_train, tiny_images, tmp_path / "a", progress=False).run()
    ref, _ = _weights(tmp_path / "a")
    real = trainer_mod.cosine_lr

    def interrupt_at_6(step, cfg):
        if step == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return real(step, cfg)

    monkeypatch.setattr(trainer_mod, "cosine_lr", interrupt_at_6)
    with pytest.raises(TrainingInterrupted):
        MetaTrainer(tiny_field, tiny_train, tiny_images, tmp_path / "b", progress=False).run()
    assert _weights(tmp_path / "b")[1]["step"] == 7  # the step in flight completed, then it stopped
    monkeypatch.setattr(trainer_mod, "cosine_lr", real)
    MetaTrainer(tiny_field, tiny_train, tiny_images, tmp_path / "b", progress=False).run()
    got, _ = _weights(tmp_path / "b")
    for name in ref:
        assert torch.equal(ref[name], got[name]), name


_REAL_ACCUMULATE = trainer_mod.accumulate_meta_gradient


def _poison(monkeypatch, poisoned_call):
    """NaN outer losses from the meta-gradient calls for which ``poisoned_call(n)`` (1-based) holds."""
    real = _REAL_ACCUMULATE
    calls = {"n": 0}

    def poisoned(net, *args, **kwargs):
        calls["n"] += 1
        stats = real(net, *args, **kwargs)
        if poisoned_call(calls["n"]):
            stats.outer_loss = float("nan")
        return stats

    monkeypatch.setattr(trainer_mod, "accumulate_meta_gradient", poisoned)


def test_non_finite_values_roll_back_and_stop_as_diverged_when_no_rollback_is_left(tmp_path, tiny_images, tiny_field,
                                                                                     tiny_train, monkeypatch):
    _poison(monkeypatch, lambda n: n >= 6)
    cfg = dataclasses.replace(tiny_train, max_rollbacks=2)
    with pytest.raises(TrainingDivergedError, match=r"diverged at step 6 .*2 rollback\(s\).*checkpoint \(step 4\)"):
        MetaTrainer(tiny_field, cfg, tiny_images, tmp_path / "m", progress=False).run()
    weights, meta = _weights(tmp_path / "m")
    assert meta["step"] == 4 and not meta["finished"] and len(meta["rollbacks"]) == 2
    assert all(torch.isfinite(v).all() for v in weights.values())

    _poison(monkeypatch, lambda n: n == 6)   # one poisoned step: one rollback, then the run finishes
    result = MetaTrainer(tiny_field, tiny_train, tiny_images, tmp_path / "once", progress=False).run()
    assert result.finished and result.steps_done == tiny_train.steps
    assert [(rb["step"], rb["to_step"], rb["lr_scale"]) for rb in result.rollbacks] == [(6, 4, 0.5)]
    assert "non-finite" in result.rollbacks[0]["reason"]


class _FakeClock:
    """Seconds that pass only when a step says so."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class _TimedTrainer(MetaTrainer):
    """Each meta-step takes one second of the fake clock; ``on_step(trainer, step)`` runs before it."""

    def __init__(self, *args, on_step=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_step = on_step

    def meta_gradient(self, net, coords, x, subsets, indices, step):
        if self.on_step is not None:
            self.on_step(self, net, step)
        self.clock.now += 1.0
        return super().meta_gradient(net, coords, x, subsets, indices, step)


def _budget_cfg(tiny_train, **kw):
    return dataclasses.replace(tiny_train, steps=10 ** 9, budget_minutes=0.5, warmup_steps=2, log_every=1,
                               val_every=0, checkpoint_every=7, min_lr_ratio=0.1, **kw)


def test_time_budget_schedule_follows_the_clock_and_ends_at_the_budget(tmp_path, tiny_images, tiny_field, tiny_train):
    cfg = _budget_cfg(tiny_train)
    result = _TimedTrainer(tiny_field, cfg, tiny_images, tmp_path / "m", progress=False, clock=_FakeClock()).run()
    # 30 s of budget at 1 s per step: 30 steps, the last one ending the cosine at its floor
    assert result.steps_done == 30 and result.stopped_by == "budget" and result.finished
    assert result.schedule == "time" and result.schedule_minutes == pytest.approx(0.5)
    lrs = [h["lr"] for h in result.history if "lr" in h]
    assert lrs[:2] == pytest.approx([cfg.outer_lr / 2, cfg.outer_lr])   # warm-up in steps
    # then cosine over the time from the warm-up's end (3 s, after step 2) to the budget (30 s)
    expect = [cfg.outer_lr * (0.1 + 0.45 * (1 + math.cos(math.pi * (s + 1 - 3) / 27))) for s in range(2, 30)]
    assert lrs[2:] == pytest.approx(expect)
    assert lrs[-1] == pytest.approx(cfg.outer_lr * cfg.min_lr_ratio)
    _, meta = _weights(tmp_path / "m")
    assert meta["finished"] and meta["step"] == 30 and meta["schedule"]["elapsed"] == pytest.approx(30.0)


def test_an_interrupted_budget_run_resumes_on_the_same_schedule(tmp_path, tiny_images, tiny_field, tiny_train):
    cfg = _budget_cfg(tiny_train)
    ref = _TimedTrainer(tiny_field, cfg, tiny_images, tmp_path / "a", progress=False, clock=_FakeClock()).run()

    def interrupt_at_11(trainer, net, step):
        if step == 11:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        _TimedTrainer(tiny_field, cfg, tiny_images, tmp_path / "b", progress=False, clock=_FakeClock(),
                      on_step=interrupt_at_11).run()
    assert _weights(tmp_path / "b")[1]["schedule"]["elapsed"] == pytest.approx(12.0)
    # a later session, on a clock that reads differently: the 12 s already spent still count
    got = _TimedTrainer(tiny_field, cfg, tiny_images, tmp_path / "b", progress=False, clock=_FakeClock(5e4)).run()
    assert got.resumed_from == 12 and got.steps_done == ref.steps_done == 30
    assert [h["lr"] for h in got.history if "lr" in h] == [h["lr"] for h in ref.history if "lr" in h]
    a, b = _weights(tmp_path / "a")[0], _weights(tmp_path / "b")[0]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_steps_keep_their_schedule_when_a_budget_is_not_asked_for(tmp_path, tiny_images, tiny_field, tiny_train):
    result = _TimedTrainer(tiny_field, tiny_train, tiny_images, tmp_path / "m", progress=False,
                           clock=_FakeClock()).run()
    assert result.schedule == "steps" and result.steps_done == tiny_train.steps and result.stopped_by == "steps"
    lrs = [(h["step"], h["lr"]) for h in result.history if "lr" in h]
    assert lrs == [(s, pytest.approx(cosine_lr(s - 1, tiny_train))) for s in range(2, 13, 2)]
    stopped = dataclasses.replace(tiny_train, max_minutes=5 / 60)   # stops after 5 s, schedule over 12 steps
    result = _TimedTrainer(tiny_field, stopped, tiny_images, tmp_path / "s", progress=False, clock=_FakeClock()).run()
    assert result.stopped_by == "max_minutes" and result.steps_done == 5 and not result.finished


def test_the_guard_rolls_back_a_collapse_with_a_lower_learning_rate(tmp_path, tiny_images, tiny_field, tiny_train,
                                                                      caplog):
    def corrupt_at_9(trainer, net, step):   # finite weights, but the field is ruined
        if step == 9 and not trainer.corrupted:
            trainer.corrupted = True
            with torch.no_grad():
                net.out.weight.mul_(200.0)

    cfg = dataclasses.replace(tiny_train, steps=16, outer_lr=3e-3, val_every=0, log_every=2)
    trainer = _TimedTrainer(tiny_field, cfg, tiny_images, tmp_path / "m", progress=False, clock=_FakeClock(),
                            on_step=corrupt_at_9)
    trainer.corrupted = False
    with caplog.at_level("WARNING", logger="funcml.encoders.trainer"):
        result = trainer.run()
    assert result.finished and result.steps_done == 16
    (rb,) = result.rollbacks
    assert (rb["step"], rb["to_step"], rb["lr_scale"]) == (10, 8, 0.5) and "below its best" in rb["reason"]
    assert "rolled back to step 8" in caplog.text
    after = [h for h in result.history if "lr" in h and h["step"] > 8]
    assert [h["lr"] for h in after] == pytest.approx([0.5 * cosine_lr(h["step"] - 1, cfg) for h in after])
    assert {"step": 8, "rollback": rb} in result.history
    assert json.loads((tmp_path / "m" / "summary.json").read_text())["rollbacks"] == [rb]
    psnrs = [h["psnr_outer"] for h in result.history if "psnr_outer" in h]
    assert min(psnrs) > max(psnrs) - cfg.guard_drop_db   # the collapsed interval is not in the curve


def test_output_rules(tmp_path, tiny_images, tiny_field, tiny_train):
    out = tmp_path / "m"
    MetaTrainer(tiny_field, tiny_train, tiny_images, out, progress=False).run()
    with pytest.raises(OutputExistsError, match="finished"):
        MetaTrainer(tiny_field, tiny_train, tiny_images, out, progress=False)
    other = dataclasses.replace(tiny_train, inner_lr=0.1)
    with pytest.raises(OutputExistsError, match="inner_lr"):
        MetaTrainer(tiny_field, other, tiny_images, out, progress=False)
    MetaTrainer(tiny_field, other, tiny_images, out, overwrite=True, progress=False).run()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(OutputExistsError):
        MetaTrainer(tiny_field, tiny_train, tiny_images, tmp_path / "junk", progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        MetaTrainer(tiny_field, tiny_train, tiny_images, tmp_path / "new", resume=True, progress=False)


def test_model_must_fit_the_data(tmp_path, tiny_images, tiny_field, tiny_train):
    with pytest.raises(ConfigError, match="1-D|2-D"):
        MetaTrainer(dataclasses.replace(tiny_field, dim_in=1), tiny_train, tiny_images, tmp_path / "m")


@pytest.mark.parametrize("shape", [(1, 16), (2, 12), (3, 6, 6), (1, 4, 4, 4)])
def test_one_code_path_for_1d_2d_3d_and_multichannel(tmp_path, shape, tiny_train):
    from conftest import make_signal_set

    from funcml.encoders.config import FieldConfig
    from funcml.latents.encode import encode_signal_set

    signals = make_signal_set(12, shape, seed=2)
    field = FieldConfig(dim_in=len(shape) - 1, channels=shape[0], width=12, depth=3, latent_dim=6,
                        omega_first=5.0, omega_last=15.0)
    cfg = dataclasses.replace(tiny_train, steps=3, val_every=0, checkpoint_every=3)
    MetaTrainer(field, cfg, signals, tmp_path / "m", progress=False).run()
    model = FieldModel.load(tmp_path / "m")
    ls, stats = encode_signal_set(model, signals, tmp_path / "lat", model_dir=tmp_path / "m", progress=False)
    assert ls.latents.shape == (12, 6) and tuple(ls.signal_shape) == shape and stats["psnr_mean"] > 0
    assert model.decode(torch.zeros(2, 6)).shape == (2, *shape)


def test_automatic_micro_batches_are_the_fewest_within_the_budget_split_evenly(monkeypatch):
    from funcml.encoders.config import FieldConfig, TrainConfig

    field = FieldConfig(dim_in=2, channels=1, width=128, depth=8, latent_dim=256, omega_first=20.0, omega_last=60.0)
    cfg = TrainConfig(batch_size=32, inner_steps=3, context_ratio=0.25)
    per_signal = 4 * 128 * 7 * (3 * 196 * 2 + 3 * 784)   # 3 tensors per sine layer, steps 2..G and the outer pass
    cpu = torch.device("cpu")
    for budget_signals in (1, 2, 5, 7, 16, 25, 31, 32, 40):
        monkeypatch.setattr(trainer_mod, "AUTO_MICRO_BATCH_BYTES", budget_signals * per_signal + 3)
        for batch in (1, 7, 32, 33):
            micro = trainer_mod.auto_micro_batch(field, cfg, 784, batch, cpu)
            cap = min(batch, budget_signals)
            passes = -(-batch // micro)
            assert micro <= cap and passes == -(-batch // cap), (budget_signals, batch)
            assert micro * passes - batch < passes  # even: the passes differ by at most one signal
    monkeypatch.setattr(trainer_mod, "AUTO_MICRO_BATCH_BYTES", 25 * per_signal)
    assert trainer_mod.auto_micro_batch(field, cfg, 784, 32, cpu) == 16
    monkeypatch.setattr(trainer_mod, "AUTO_MICRO_BATCH_BYTES", per_signal // 2)
    assert trainer_mod.auto_micro_batch(field, cfg, 784, 32, cpu) == 1  # at least one signal
    assert trainer_mod.auto_micro_batch(field, cfg, 784, 32, torch.device("meta")) == 32  # not a CPU: whole batch


def test_fused_outer_optimizer_updates_like_plain_adamw_and_resumes_a_plain_checkpoint(tmp_path, tiny_field, tiny_train):
    """``make_optimizer`` is AdamW's fused kernel: the same updates as the plain AdamW up to float
    rounding (cosine-scheduled lr, weight decay), and a checkpoint written by a plain AdamW resumes
    into it with the saved state and hyper-parameters, still fused."""
    from funcml.encoders.checkpoint import load_checkpoint, save_checkpoint
    from funcml.encoders.siren import ModulatedSiren

    torch.manual_seed(0)
    nets = [ModulatedSiren(tiny_field, inner_lr=tiny_train.inner_lr) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    start = [p.detach().clone() for p in nets[0].parameters()]
    fused_opt = trainer_mod.make_optimizer(list(nets[0].parameters()), tiny_train)
    plain_opt = torch.optim.AdamW(nets[1].parameters(), lr=tiny_train.outer_lr, weight_decay=tiny_train.weight_decay)
    assert fused_opt.param_groups[0]["fused"] is True and not plain_opt.param_groups[0]["fused"]
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        lr = cosine_lr(step, tiny_train)
        for opt in (fused_opt, plain_opt):
            opt.param_groups[0]["lr"] = lr
        for p, q in zip(nets[0].parameters(), nets[1].parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        fused_opt.step()
        plain_opt.step()
    apart = max((p - q).abs().max().item() for p, q in zip(nets[0].parameters(), nets[1].parameters()))
    moved = max((q - s).abs().max().item() for q, s in zip(nets[1].parameters(), start))
    assert moved > 1e-3 and apart < 1e-6, (moved, apart)   # six steps of lr ~1e-3 apart; float rounding

    meta = {"step": 6, "finished": False, "best_val_psnr": None, "best_step": None, "history": [],
            "config": {"field": {}, "train": {}, "data_fingerprint": "x"}}
    save_checkpoint(tmp_path, nets[1], plain_opt, meta)
    resumed = ModulatedSiren(tiny_field, inner_lr=tiny_train.inner_lr)
    opt = trainer_mod.make_optimizer(list(resumed.parameters()), tiny_train)
    load_checkpoint(tmp_path, resumed, opt)
    assert opt.param_groups[0]["fused"] is True and opt.param_groups[0]["lr"] == plain_opt.param_groups[0]["lr"]
    for p, q in zip(resumed.parameters(), nets[1].parameters()):
        assert torch.equal(opt.state[p]["exp_avg"], plain_opt.state[q]["exp_avg"])
        assert torch.equal(opt.state[p]["exp_avg_sq"], plain_opt.state[q]["exp_avg_sq"])
        assert float(opt.state[p]["step"]) == 6


def test_omega_scaled_learning_rates_give_each_sine_layer_omega_1_over_omega_k(tmp_path, tiny_images, tiny_field,
                                                                                tiny_train):
    from funcml.encoders.siren import ModulatedSiren

    net = ModulatedSiren(tiny_field)
    groups = trainer_mod.param_groups(net, dataclasses.replace(tiny_train, omega_lr=True))
    scale = {id(p): g["layer_scale"] for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters())) and groups[0]["layer_scale"] == 1.0
    for k, layer in enumerate([net.first, *net.hidden, net.out]):
        assert scale[id(layer.weight)] == scale[id(layer.bias)] == pytest.approx(net.omegas[0] / net.omegas[k])
    assert scale[id(net.shift.weight)] == 1.0
    cfg = dataclasses.replace(tiny_train, omega_lr=True, steps=4, val_every=0)
    trainer = MetaTrainer(tiny_field, cfg, tiny_images, tmp_path / "m", progress=False)
    trainer.run()
    _, meta = _weights(tmp_path / "m")
    lrs = sorted(g["lr"] / cosine_lr(3, cfg) for g in meta["param_groups"])
    assert lrs == pytest.approx(sorted(g["layer_scale"] for g in groups))
