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
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from funcml.progress import progress_bar

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
    from funcml.encoders.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
    from funcml.io import atomic_write_bytes, atomic_write_json, load_tensors, save_tensors

    if epochs < 1 or batch_size < 1 or width < 1:
        raise ConfigError("--epochs, --batch-size and --width must be >= 1")
    task = signals.task
    y_all = labels_to_y(signals.labels, task, signals.spec)
    k = n_outputs(y_all, task, signals.label_names)
    names = class_names(signals.label_names, k)
    n_out = 1 if task == BINARY and k == 2 else k
    tr, va, te = signals.indices("train"), signals.indices("val"), signals.indices("test")
    if len(tr) == 0 or len(te) == 0:
        raise DataError(f"{signals.spec}: the baseline needs non-empty train and test splits")
    metric = default_select_metric(task) if select_metric == "auto" else select_metric
    dev = resolve_device(device)
    # Laid out as the encoder checkpoints' schema wants it (funcml.encoders.checkpoint.LAST_SCHEMA):
    # "field" holds the network's settings, "train" the optimisation's.
    config = {"data_fingerprint": signals.fingerprint, "signal_shape": list(signals.signal_shape),
              "field": {"model": "resnet18", "dim": signals.dim, "width": width, "task": task},
              "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                        "metric": metric, "class_weight": class_weight, "seed": seed}}

    out = Path(out) if out is not None else None
    meta = None
    if out is not None and out.exists():
        meta = read_checkpoint_meta(out)
        if overwrite:
            shutil.rmtree(out)
            meta = None
        elif meta is None or meta.get("config") != config or meta.get("finished"):
            raise OutputExistsError(f"output path exists: {out} (pass --overwrite to replace it"
                                    + ("; it holds a run with other settings)" if meta and not meta.get("finished")
                                       else ")"))

    def load(idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(signals.get(idx) * 2.0 - 1.0)

    x_tr, x_va, x_te = load(tr), load(va), load(te)
    y_tr = torch.from_numpy(y_all[tr])
    y_tr = y_tr.float() if task == MULTILABEL else y_tr
    spatial = signals.spatial_shape
    torch.manual_seed(seed)
    net = ResNet18(signals.dim, signals.channels, n_out, width=width, small_input=max(spatial) <= 32).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    if class_weight not in (None, "balanced"):
        raise ConfigError(f"class_weight must be None or 'balanced'; got {class_weight!r}")
    weight = class_weights(y_all[tr], k, task) if class_weight == "balanced" else None
    loss_fn = make_loss(task, n_out, weight, dev)
    start, best_score, best_epoch, history, elapsed = 0, -np.inf, 0, [], 0.0
    if meta is not None:
        meta = load_checkpoint(out, net, opt)
        start, best_epoch, history, elapsed = int(meta["step"]), int(meta["best_epoch"]), meta["history"], meta["seconds"]
        best_score = -np.inf if meta["best_score"] is None else float(meta["best_score"])
        log(f"resuming after epoch {start} of {epochs}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    best_state = None
    if out is not None and (out / BEST_FILE).is_file() and meta is not None:
        best_state = {k2: v for k2, v in load_tensors(out / BEST_FILE).items()}

    t0 = time.perf_counter() - elapsed
    deadline = None if max_minutes is None else time.perf_counter() + 60 * max_minutes
    bar = progress_bar(total=epochs, initial=start, desc="baseline", unit="epoch", disable=not progress, leave=False)
    stopped = "epochs"
    for epoch in range(start, epochs):
        for group in opt.param_groups:
            group["lr"] = _lr_at(epoch, epochs, lr)
        net.train()
        order = torch.randperm(len(tr), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        total = 0.0
        for i in range(0, len(tr), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2 and len(tr) > 1:
                continue  # batch norm needs two samples
            loss = loss_fn(net(x_tr[idx].to(dev)), y_tr[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        entry = {"epoch": epoch + 1, "train_loss": total / len(tr)}
        if len(va):
            val = classification_metrics(y_all[va], _proba(net, x_va, task, n_out, dev), task, names)
            score = selection_score(val, metric)
            entry["val_" + metric] = val[metric]
        else:
            score = -entry["train_loss"]
        if best_state is None or score > best_score:
            best_score, best_epoch = score, epoch + 1
            best_state = {k2: v.detach().cpu().clone() for k2, v in net.state_dict().items()}
            if out is not None:
                save_tensors(out / BEST_FILE, best_state, metadata={"format": "funcml.baseline"})
        history.append(entry)
        bar.update(1)
        bar.set_postfix(loss=f"{entry['train_loss']:.3f}", **({metric: f"{entry['val_' + metric]:.3f}"}
                                                              if "val_" + metric in entry else {}))
        if out is not None:
            save_checkpoint(out, net, opt, {"step": epoch + 1, "finished": epoch + 1 == epochs, "config": config,
                                            "best_val_psnr": None, "best_step": best_epoch,
                                            "best_epoch": best_epoch, "history": history,
                                            "best_score": best_score if np.isfinite(best_score) else None,
                                            "seconds": time.perf_counter() - t0})
        if deadline is not None and time.perf_counter() > deadline and epoch + 1 < epochs:
            stopped = "max_minutes"
            break
    bar.close()
    train_seconds = time.perf_counter() - t0
    net.load_state_dict(best_state)
    proba_te = _proba(net, x_te, task, n_out, dev)
    report = {
        "model": f"resnet18-{signals.dim}d",
        "stem": "small" if max(spatial) <= 32 else "imagenet",
        "data": signals.describe() | {"info": None},
        "task": task,
        "width": width,
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "epochs": epochs,
        "epochs_done": len(history),
        "stopped_by": stopped,
        "best_epoch": best_epoch,
        "select_metric": metric,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(1, len(history)),
        "device": str(dev),
        "counts": {"train": int(len(tr)), "val": int(len(va)), "test": int(len(te))},
        "history": history,
    }
    if len(va):
        report["val"] = classification_metrics(y_all[va], _proba(net, x_va, task, n_out, dev), task, names)
    report["test"] = classification_metrics(y_all[te], proba_te, task, names)
    if out is not None:
        import pandas as pd

        from funcml.tasks.classify.figures import plot_confusion, plot_roc

        atomic_write_json(out / "metrics.json", json_safe(report))
        atomic_write_json(out / "baseline.json", json_safe({"format": "funcml.baseline", "version": 1,
                                                            "config": config, "classes": names,
                                                            "files": [BEST_FILE]}))
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
    return report
