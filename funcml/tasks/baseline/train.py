"""Pixel baseline: a ResNet-18-style CNN trained on the raw signals, on the same splits and metrics.

MedMNIST's protocol: inputs scaled to [-1, 1], Adam (lr 1e-3), the learning rate divided by 10 at
50 % and 75 % of the epochs, cross-entropy (binary cross-entropy for binary and multi-label tasks);
after every epoch the validation metric is computed and the best epoch's weights are kept and
evaluated on the test split. With ``out``, every epoch is checkpointed and rerunning the same call
resumes; ``out`` then receives ``model.safetensors`` (best weights), ``baseline.json``,
``metrics.json``, ``predictions.csv`` and the figures.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from funcml.errors import ConfigError, DataError, OutputExistsError
from funcml.tasks.baseline.resnet import ResNet18
from funcml.tasks.classify.metrics import (classification_metrics, default_select_metric, json_safe,
                                           predict_from_proba, selection_score)
from funcml.tasks.classify.base import class_weights
from funcml.tasks.classify.mlp import make_loss
from funcml.tasks.classify.targets import BINARY, MULTILABEL, class_names, labels_to_y, n_outputs

BEST_FILE = "model.safetensors"


def _lr_at(epoch: int, epochs: int, lr: float) -> float:
    """Step schedule: lr, then lr/10 from 50 % of the epochs, lr/100 from 75 %."""
    drops = sum(epoch >= int(m * epochs) for m in (0.5, 0.75))
    return lr * 0.1 ** drops


def _proba(net: torch.nn.Module, x: torch.Tensor, task: str, n_out: int, device: torch.device,
           batch: int = 256) -> np.ndarray:
    net.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(net(x[i:i + batch].to(device)).float().cpu())
    logits = torch.cat(outs) if outs else torch.zeros(0, n_out)
    if task == MULTILABEL:
        return torch.sigmoid(logits).double().numpy()
    if n_out == 1:
        p = torch.sigmoid(logits[:, 0]).double().numpy()
        return np.stack([1 - p, p], axis=1)
    return torch.softmax(logits, dim=1).double().numpy()


def _inputs(signals, idx: np.ndarray) -> torch.Tensor:
    """Signals of ``idx`` scaled to [-1, 1] ``(n, C, *spatial)``."""
    return torch.from_numpy(signals.get(idx) * 2.0 - 1.0)


def _checked_output(out: Path | None, config: dict, overwrite: bool) -> None:
    """Leave ``out`` to resume when it holds an unfinished run of ``config``; refuse or clear it otherwise."""
    from funcml.engine import SCHEMA
    from funcml.io.checkpoint import read_checkpoint_meta

    if out is None or not out.exists():
        return
    if overwrite:
        shutil.rmtree(out)
        return
    meta = read_checkpoint_meta(out, SCHEMA)
    if meta is None or meta["identity"] != config or meta["finished"]:
        other = meta is not None and not meta["finished"]
        raise OutputExistsError(f"output path exists: {out} (pass --overwrite to replace it"
                                + ("; it holds a run with other settings)" if other else ")"))


def _train(signals, net: torch.nn.Module, y_all: np.ndarray, names: list[str], config: dict,
           device: torch.device, out: Path | None, max_minutes: float | None, progress: bool,
           log: Callable[[str], None]):
    """Train ``net`` on the training split with :func:`funcml.engine.fit`, keeping the best epoch."""
    from funcml.engine import Checkpoints, Plan, fit

    task, k, t = signals.task, len(names), config["train"]
    n_out = 1 if task == BINARY and k == 2 else k
    tr, va = signals.indices("train"), signals.indices("val")
    x_tr, x_va = _inputs(signals, tr), _inputs(signals, va)
    y_tr = torch.from_numpy(y_all[tr])
    y_tr = y_tr.float() if task == MULTILABEL else y_tr
    opt = torch.optim.Adam(net.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    weight = class_weights(y_all[tr], k, task) if t["class_weight"] == "balanced" else None
    loss_fn = make_loss(task, n_out, weight, device)

    def batches(epoch: int) -> list[torch.Tensor]:
        order = torch.randperm(len(tr), generator=torch.Generator().manual_seed(t["seed"] * 100003 + epoch))
        parts = [order[i:i + t["batch_size"]] for i in range(0, len(tr), t["batch_size"])]
        return [idx for idx in parts if len(idx) >= 2 or len(tr) == 1]  # batch norm needs two samples

    def validate(train_loss: float) -> float | tuple[float, dict]:
        if not len(va):
            return -train_loss
        val = classification_metrics(y_all[va], _proba(net, x_va, task, n_out, device), task, names)
        return selection_score(val, t["metric"]), {"val_" + t["metric"]: val[t["metric"]]}

    plan = Plan(rounds=t["epochs"], lr_at=lambda _step, epoch: _lr_at(epoch, t["epochs"], t["lr"]), maximize=True,
                max_minutes=max_minutes, progress=progress, desc="baseline", score_name=None)
    return fit(net, opt, batches, lambda idx: (loss_fn(net(x_tr[idx].to(device)), y_tr[idx].to(device)), len(idx)),
               plan, validate=validate, checkpoints=Checkpoints(out, config) if out is not None else None, log=log)


def train_pixel_baseline(signals, *, width: int = 64, epochs: int = 30, batch_size: int = 128, lr: float = 1e-3,
                         weight_decay: float = 0.0, select_metric: str = "auto", class_weight: str | None = None,
                         device: str | torch.device = "cpu", seed: int = 0, out: str | Path | None = None,
                         overwrite: bool = False, max_minutes: float | None = None, progress: bool = True,
                         log: Callable[[str], None] = lambda s: None) -> dict:
    """Train the CNN on ``signals`` (a :class:`~funcml.data.SignalSet`) and return its report.

    The report has ``val``/``test`` metrics (:func:`~funcml.tasks.classify.metrics.classification_metrics`
    at the best validation epoch), ``train_seconds`` (the training loop, validation included),
    ``best_epoch``, ``epochs_done`` and the network size.
    """
    from funcml.devices import resolve_device

    if epochs < 1 or batch_size < 1 or width < 1:
        raise ConfigError("--epochs, --batch-size and --width must be >= 1")
    if class_weight not in (None, "balanced"):
        raise ConfigError(f"class_weight must be None or 'balanced'; got {class_weight!r}")
    task = signals.task
    y_all = labels_to_y(signals.labels, task, signals.spec)
    names = class_names(signals.label_names, n_outputs(y_all, task, signals.label_names))
    n_out = 1 if task == BINARY and len(names) == 2 else len(names)
    if len(signals.indices("train")) == 0 or len(signals.indices("test")) == 0:
        raise DataError(f"{signals.spec}: the baseline needs non-empty train and test splits")
    metric = default_select_metric(task) if select_metric == "auto" else select_metric
    dev = resolve_device(device)
    config = {"data_fingerprint": signals.fingerprint, "signal_shape": list(signals.signal_shape),
              "field": {"model": "resnet18", "dim": signals.dim, "width": width, "task": task},
              "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                        "metric": metric, "class_weight": class_weight, "seed": seed}}
    out = Path(out) if out is not None else None
    _checked_output(out, config, overwrite)
    torch.manual_seed(seed)
    small = max(signals.spatial_shape) <= 32
    net = ResNet18(signals.dim, signals.channels, n_out, width=width, small_input=small).to(dev)
    run = _train(signals, net, y_all, names, config, dev, out, max_minutes, progress, log)
    report = _report(signals, net, run, y_all, names, config, dev)
    if out is not None:
        _write_outputs(out, signals, net, report, y_all, names, config, dev)
    return report


def _report(signals, net: torch.nn.Module, run, y_all: np.ndarray, names: list[str], config: dict,
            dev: torch.device) -> dict:
    """The baseline's report: settings, training summary and val/test metrics of the kept weights."""
    task, f = signals.task, config["field"]
    n_out = 1 if task == BINARY and len(names) == 2 else len(names)
    tr, va, te = signals.indices("train"), signals.indices("val"), signals.indices("test")
    history = [{"epoch": e["epoch"], "train_loss": e["train_loss"],
                **{k: v for k, v in e.items() if k.startswith("val_")}} for e in run.history]
    report = {
        "model": f"resnet18-{signals.dim}d", "stem": "small" if max(signals.spatial_shape) <= 32 else "imagenet",
        "data": signals.describe() | {"info": None}, "task": task, "width": f["width"],
        "parameters": int(sum(p.numel() for p in net.parameters())), "epochs": config["train"]["epochs"],
        "epochs_done": len(history), "stopped_by": "epochs" if run.stopped_by == "rounds" else run.stopped_by,
        "best_epoch": run.best_round, "select_metric": config["train"]["metric"], "train_seconds": run.seconds,
        "seconds_per_epoch": run.seconds / max(1, len(history)), "device": str(dev),
        "counts": {"train": int(len(tr)), "val": int(len(va)), "test": int(len(te))}, "history": history,
    }
    for split, idx in (("val", va), ("test", te)):
        if len(idx):
            proba = _proba(net, _inputs(signals, idx), task, n_out, dev)
            report[split] = classification_metrics(y_all[idx], proba, task, names)
    return report


def _write_outputs(out: Path, signals, net: torch.nn.Module, report: dict, y_all: np.ndarray, names: list[str],
                   config: dict, dev: torch.device) -> None:
    """``model.safetensors`` (kept weights), ``metrics.json``, ``baseline.json``, predictions and figures."""
    import pandas as pd

    from funcml.io import atomic_write_bytes, atomic_write_json, save_tensors
    from funcml.tasks.classify.figures import plot_confusion, plot_roc

    task, te = signals.task, signals.indices("test")
    n_out = 1 if task == BINARY and len(names) == 2 else len(names)
    save_tensors(out / BEST_FILE, {k: v.detach().cpu() for k, v in net.state_dict().items()},
                 metadata={"format": "funcml.baseline"})
    atomic_write_json(out / "metrics.json", json_safe(report))
    atomic_write_json(out / "baseline.json", json_safe({"format": "funcml.baseline", "version": 1, "config": config,
                                                        "classes": names, "files": [BEST_FILE]}))
    proba_te = _proba(net, _inputs(signals, te), task, n_out, dev)
    pred = predict_from_proba(proba_te, task)
    df = pd.DataFrame({"index": te})
    if task == MULTILABEL:
        for j, name in enumerate(names):
            df[f"true_{name}"], df[f"pred_{name}"], df[f"p_{name}"] = y_all[te][:, j], pred[:, j], proba_te[:, j]
    else:
        df["true"], df["pred"] = y_all[te], pred
        for j, name in enumerate(names):
            df[f"p_{name}"] = proba_te[:, j]
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.6g")
    atomic_write_bytes(out / "predictions.csv", buf.getvalue().encode())
    title = f"{report['model']} on {signals.name} (test)"
    plot_confusion(np.asarray(report["test"]["confusion_matrix"]), names, out / "confusion_matrix.png", title)
    if task == BINARY:
        plot_roc(y_all[te], proba_te[:, 1], out / "roc.png", name=report["model"], title=title)
