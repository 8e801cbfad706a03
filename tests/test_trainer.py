"""Meta-training loop: learning, deterministic resume, interruption, divergence, output rules."""

import dataclasses
import json
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


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, tiny_images, tiny_field, tiny_train, monkeypatch):
    real = trainer_mod.accumulate_meta_gradient
    calls = {"n": 0}

    def poisoned(net, *args, **kwargs):
        calls["n"] += 1
        stats = real(net, *args, **kwargs)
        if calls["n"] == 6:
            stats.outer_loss = float("nan")
        return stats

    monkeypatch.setattr(trainer_mod, "accumulate_meta_gradient", poisoned)
    with pytest.raises(TrainingDivergedError, match="diverged at step 6"):
        MetaTrainer(tiny_field, tiny_train, tiny_images, tmp_path / "m", progress=False).run()
    _, meta = _weights(tmp_path / "m")
    assert meta["step"] == 4 and not meta["finished"]


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
