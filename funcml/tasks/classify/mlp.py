"""A multi-layer perceptron in torch on latent vectors (the MedFuncta paper's downstream classifier).

``hidden_layer_sizes=(2048, 1024, 512), dropout=0.3`` is the paper's network (``MLP_PRESETS["paper"]``);
the default is a smaller one that trains in seconds on a CPU. Linear -> ReLU -> Dropout blocks,
AdamW, mini-batches; with validation latents it keeps the weights of the epoch with the lowest
validation loss and stops after ``patience`` epochs without improvement.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from funcml.tasks.classify.base import BinaryLogits, LatentClassifier
from funcml.tasks.classify.targets import BINARY, MULTILABEL

MLP_PRESETS: dict[str, dict] = {
    "default": {"hidden_layer_sizes": (512, 256), "dropout": 0.3},
    "paper": {"hidden_layer_sizes": (2048, 1024, 512), "dropout": 0.3},
}


def build_mlp(n_in: int, hidden: tuple[int, ...], n_out: int, dropout: float) -> torch.nn.Sequential:
    """``n_in -> hidden... -> n_out`` with ReLU and dropout after each hidden layer."""
    layers: list[torch.nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [torch.nn.Linear(width, int(h)), torch.nn.ReLU(), torch.nn.Dropout(dropout)]
        width = int(h)
    layers.append(torch.nn.Linear(width, n_out))
    return torch.nn.Sequential(*layers)


def make_loss(task: str, n_out: int, weight: np.ndarray | None, dev: torch.device):
    """``loss(logits (B, n_out), targets)``: BCE for multi-label and one-output binary models, else
    cross-entropy; ``weight`` (per class, or per label: positive weight) re-weights it."""
    w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32, device=dev)
    if task == MULTILABEL:
        return torch.nn.BCEWithLogitsLoss(pos_weight=w)
    if n_out == 1:
        if w is None:
            bce = torch.nn.BCEWithLogitsLoss()
            return lambda out, y: bce(out[:, 0], y.float())
        return lambda out, y: torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], y.float(), weight=w[y])
    return torch.nn.CrossEntropyLoss(weight=w)


class LatentMLPClassifier(LatentClassifier):
    """MLP on standardised latents (scikit-learn estimator; torch inside).

    Args:
        hidden_layer_sizes: widths of the hidden layers.
        dropout: dropout probability after each hidden layer.
        lr, weight_decay: AdamW settings.
        batch_size: mini-batch size.
        max_epochs: epochs at most.
        patience: early stopping on the validation loss (used only when ``fit`` gets ``X_val``).
        class_weight: None, ``"balanced"`` (inverse class frequency) or ``{class: weight}``.
        device: ``cpu``, ``cuda`` or ``auto``.
        standardize: standardise latents with the training mean and standard deviation.
        task: ``auto`` (from ``y``) or a MedMNIST task name.
        random_state: seeds initialisation, shuffling and dropout (fits are reproducible).

    Attributes:
        net_: the trained ``torch.nn.Sequential`` (eval mode, CPU). n_iter_: epochs run.
        best_epoch_: the epoch whose weights were kept. history_: per-epoch losses.
    """

    kind = "mlp"

    def __init__(self, hidden_layer_sizes=(512, 256), dropout=0.3, lr=1e-3, weight_decay=1e-4, batch_size=128,
                 max_epochs=200, patience=20, class_weight=None, device="cpu", standardize=True, task="auto",
                 random_state=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.class_weight = class_weight
        self.device = device
        self.standardize = standardize
        self.task = task
        self.random_state = random_state

    def _n_out(self) -> int:
        return 1 if self.task_ == BINARY and len(self.classes_) == 2 else len(self.classes_)

    def _fit(self, Z, Y, Zv, Yv) -> None:
        from funcml.devices import resolve_device
        from funcml.engine import Plan, fit

        if self.max_epochs < 1 or self.batch_size < 1:
            raise ValueError("max_epochs and batch_size must be >= 1")
        dev = resolve_device(self.device)
        hidden = tuple(int(h) for h in (self.hidden_layer_sizes or ()))
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(int(self.random_state or 0))
            net = build_mlp(Z.shape[1], hidden, self._n_out(), float(self.dropout)).to(dev)
            gen = torch.Generator().manual_seed(int(self.random_state or 0) + 1)
            opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            loss_fn = make_loss(self.task_, self._n_out(), self._class_weight_vector(Y), dev)
            x, y = self._tensors(Z, Y, dev)
            batch = int(self.batch_size)

            def batches(_epoch: int):
                order = torch.randperm(len(x), generator=gen).to(dev)
                return (order[i:i + batch] for i in range(0, len(x), batch))

            validate = None
            if Zv is not None:
                xv, yv = self._tensors(Zv, Yv, dev)
                validate = lambda _train_loss: float(loss_fn(net(xv), yv))  # noqa: E731
            plan = Plan(rounds=int(self.max_epochs), patience=int(self.patience), min_delta=1e-6,
                        score_name="val_loss")
            run = fit(net, opt, batches, lambda idx: (loss_fn(net(x[idx]), y[idx]), len(idx)), plan,
                      validate=validate)
        self.net_ = net.cpu().eval()
        self.n_iter_ = len(run.history)
        self.best_epoch_ = run.best_round if validate is not None else len(run.history)
        self.history_ = run.history

    def _tensors(self, Z: np.ndarray, Y: np.ndarray, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents ``(n, P)`` and targets on ``dev`` (float targets for multi-label tasks)."""
        y = torch.from_numpy(Y).to(dev)
        return torch.from_numpy(Z).to(dev), (y.float() if self.task_ == MULTILABEL else y)

    def _logits(self, Z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            parts = [self.net_(torch.from_numpy(Z[i:i + 8192])) for i in range(0, len(Z), 8192)]
        out = torch.cat(parts) if parts else torch.zeros(0, self._n_out())
        return out.numpy()

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        from funcml.tasks.classify.base import logits_to_proba

        logits = self._logits(Z).astype(np.float64)
        if self._n_out() == 1:
            logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
        return logits_to_proba(logits, self.task_)

    def _torch_core(self) -> torch.nn.Module:
        net = copy.deepcopy(self.net_).eval()
        return BinaryLogits(net) if self._n_out() == 1 else net

    def _state(self) -> tuple[dict, dict[str, np.ndarray]]:
        tensors = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}
        return {"n_iter": self.n_iter_, "best_epoch": self.best_epoch_, "history": self.history_}, tensors

    def _set_state(self, state: dict, tensors: dict[str, np.ndarray], directory: Path) -> None:
        hidden = tuple(int(h) for h in (self.hidden_layer_sizes or ()))
        net = build_mlp(self.n_features_in_, hidden, self._n_out(), float(self.dropout))
        net.load_state_dict({k[4:]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith("net.")})
        self.net_ = net.eval()
        self.n_iter_, self.best_epoch_, self.history_ = state["n_iter"], state["best_epoch"], state["history"]
