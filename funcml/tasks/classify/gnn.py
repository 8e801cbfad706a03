"""A population-graph GNN: signals are nodes, edges join nearest neighbours in latent space.

Transductive training (Parisot et al. style): the graph holds the training latents, the
validation latents and any unlabelled latents passed as ``X_unlabelled`` (e.g. the test split);
the loss sees the training labels only, the validation nodes' labels only choose the epoch
(early stopping). Edges: each node's ``n_neighbors`` nearest nodes (standardised latents,
``metric``), made symmetric. The network is a stack of torch-geometric graph convolutions
(``GCNConv`` or ``SAGEConv``) trained full-batch.

Prediction for latents ``X``: a row identical to a node of the graph gets that node's output
(so the test split of a transductive fit is predicted exactly as during training); any other row
is attached to the graph by edges from its ``n_neighbors`` nearest nodes (it receives messages
but sends none), so predictions of different rows never influence each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import validate_data

from funcml.tasks.classify.base import LatentClassifier, logits_to_proba
from funcml.tasks.classify.mlp import make_loss
from funcml.tasks.classify.targets import BINARY, MULTILABEL


class GraphNet(torch.nn.Module):
    """``layers`` graph convolutions ``n_in -> hidden ... -> n_out`` with ReLU and dropout."""

    def __init__(self, n_in: int, hidden: int, n_out: int, layers: int = 2, dropout: float = 0.5,
                 conv: str = "gcn") -> None:
        super().__init__()
        import warnings

        with warnings.catch_warnings():  # torch-geometric's import uses the deprecated torch.jit.script
            warnings.simplefilter("ignore", DeprecationWarning)
            from torch_geometric.nn import GCNConv, SAGEConv

        make = {"gcn": lambda a, b: GCNConv(a, b), "sage": lambda a, b: SAGEConv(a, b)}
        if conv not in make:
            raise ValueError(f"conv must be 'gcn' or 'sage'; got {conv!r}")
        sizes = [n_in] + [int(hidden)] * (int(layers) - 1) + [n_out]
        self.convs = torch.nn.ModuleList(make[conv](a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.dropout = float(dropout)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.dropout(x, self.dropout, self.training)
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = torch.nn.functional.dropout(torch.relu(x), self.dropout, self.training)
        return x


def knn_edges(nodes: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Symmetric k-nearest-neighbour edges ``(2, E)`` among ``nodes (N, P)`` (no self loops)."""
    n = len(nodes)
    k = max(0, min(int(k), n - 1))
    if k == 0:
        return np.zeros((2, 0), dtype=np.int64)
    nn = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(nodes)
    _, idx = nn.kneighbors(nodes)
    rows = np.repeat(np.arange(n), k + 1)
    cols = idx.reshape(-1)
    keep = rows != cols
    src, dst = cols[keep], rows[keep]
    pairs = np.unique(np.concatenate([np.stack([src, dst]), np.stack([dst, src])], axis=1), axis=1)
    return pairs.astype(np.int64)


class LatentGraphClassifier(LatentClassifier):
    """Population-graph GNN on latents (see the module docstring).

    Args:
        n_neighbors: k of the k-NN graph. metric: ``"euclidean"`` or ``"cosine"``.
        conv: ``"gcn"`` or ``"sage"``. hidden, layers, dropout: the network.
        lr, weight_decay: Adam settings. max_epochs, patience: full-batch epochs and early stopping
        on the validation nodes' loss. class_weight: None, ``"balanced"`` or ``{class: weight}``. device: ``cpu``/``cuda``/``auto``.
        standardize, task, random_state: see :class:`LatentClassifier`.

    Attributes:
        net_ (CPU, eval mode), reference_ ``(N, P)`` standardised node latents, edge_index_ ``(2, E)``.
    """

    kind = "gnn"

    def __init__(self, n_neighbors=10, metric="euclidean", conv="gcn", hidden=128, layers=2, dropout=0.5, lr=0.01,
                 weight_decay=5e-4, max_epochs=300, patience=50, class_weight=None, device="cpu", standardize=True,
                 task="auto", random_state=0):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.conv = conv
        self.hidden = hidden
        self.layers = layers
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.patience = patience
        self.class_weight = class_weight
        self.device = device
        self.standardize = standardize
        self.task = task
        self.random_state = random_state

    def fit(self, X, y, X_val=None, y_val=None, X_unlabelled=None):
        """Fit transductively: ``X_unlabelled`` (optional) joins the graph without labels."""
        self._unlabelled = X_unlabelled
        try:
            return super().fit(X, y, X_val, y_val)
        finally:
            del self._unlabelled

    def _n_out(self) -> int:
        return 1 if self.task_ == BINARY and len(self.classes_) == 2 else len(self.classes_)

    def _fit(self, Z, Y, Zv, Yv) -> None:
        from funcml.devices import resolve_device
        from funcml.engine import Plan, fit

        parts = [Z] + ([Zv] if Zv is not None else [])
        if self._unlabelled is not None and len(self._unlabelled):
            Xu = validate_data(self, self._unlabelled, reset=False, dtype=[np.float64, np.float32])
            parts.append(self._normalise(Xu))
        nodes = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
        edges = knn_edges(nodes, self.n_neighbors, self.metric)
        dev = resolve_device(self.device)
        n_tr = len(Z)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(int(self.random_state or 0))
            net = GraphNet(Z.shape[1], self.hidden, self._n_out(), self.layers, self.dropout, self.conv).to(dev)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            loss_fn = make_loss(self.task_, self._n_out(), self._class_weight_vector(Y), dev)
            x = torch.from_numpy(nodes).to(dev)
            ei = torch.from_numpy(edges).to(dev)
            y = self._targets(Y, dev)
            validate = None
            if Zv is not None:
                yv, val_rows = self._targets(Yv, dev), slice(n_tr, n_tr + len(Zv))
                validate = lambda _train_loss: float(loss_fn(net(x, ei)[val_rows], yv))  # noqa: E731
            plan = Plan(rounds=int(self.max_epochs), patience=int(self.patience), min_delta=1e-6,
                        score_name="val_loss")
            # full-batch: one update per epoch on the training nodes of the whole graph
            run = fit(net, opt, lambda _epoch: [None], lambda _: loss_fn(net(x, ei)[:n_tr], y), plan,
                      validate=validate)
        self.net_ = net.cpu().eval()
        self.reference_ = nodes
        self.edge_index_ = edges
        self.n_iter_ = len(run.history)
        self.best_epoch_ = run.best_round if validate is not None else len(run.history)
        self.history_ = run.history
        self._index = NearestNeighbors(metric=self.metric).fit(self.reference_)

    def _targets(self, Y: np.ndarray, dev: torch.device) -> torch.Tensor:
        y = torch.from_numpy(Y).to(dev)
        return y.float() if self.task_ == MULTILABEL else y

    # -- prediction -----------------------------------------------------------------------------
    def _neighbours(self) -> NearestNeighbors:
        return self._index

    def _node_logits(self) -> torch.Tensor:
        with torch.no_grad():
            return self.net_(torch.from_numpy(self.reference_), torch.from_numpy(self.edge_index_))

    def _logits(self, Z: np.ndarray, chunk: int = 8192) -> np.ndarray:
        n_ref = len(self.reference_)
        k = max(1, min(int(self.n_neighbors), n_ref))
        nodes = torch.from_numpy(self.reference_)
        base = torch.from_numpy(self.edge_index_)
        node_logits = self._node_logits()
        out = []
        for start in range(0, len(Z), chunk):
            q = np.ascontiguousarray(Z[start:start + chunk], dtype=np.float32)
            dist, idx = self._neighbours().kneighbors(q, n_neighbors=k)
            src = idx.reshape(-1)
            dst = n_ref + np.repeat(np.arange(len(q)), k)
            ei = torch.cat([base, torch.from_numpy(np.stack([src, dst]).astype(np.int64))], dim=1)
            with torch.no_grad():
                logits = self.net_(torch.cat([nodes, torch.from_numpy(q)]), ei)[n_ref:]
            same = np.flatnonzero((self.reference_[idx[:, 0]] == q).all(axis=1))
            if len(same):
                logits[same] = node_logits[idx[same, 0]]
            out.append(logits.numpy())
        return np.concatenate(out) if out else np.zeros((0, self._n_out()), np.float32)

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        logits = self._logits(Z).astype(np.float64)
        if self._n_out() == 1:
            logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
        return logits_to_proba(logits, self.task_)

    # -- persistence ----------------------------------------------------------------------------
    def _state(self):
        tensors = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}
        tensors["reference"] = self.reference_
        tensors["edge_index"] = self.edge_index_
        return {"n_iter": self.n_iter_, "best_epoch": self.best_epoch_, "history": self.history_}, tensors

    def _set_state(self, state, tensors, directory: Path) -> None:
        net = GraphNet(self.n_features_in_, self.hidden, self._n_out(), self.layers, self.dropout, self.conv)
        net.load_state_dict({k[4:]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith("net.")})
        self.net_ = net.eval()
        self.reference_ = np.ascontiguousarray(tensors["reference"], dtype=np.float32)
        self.edge_index_ = np.asarray(tensors["edge_index"], dtype=np.int64)
        self.n_iter_, self.best_epoch_, self.history_ = state["n_iter"], state["best_epoch"], state["history"]
        self._index = NearestNeighbors(metric=self.metric).fit(self.reference_)
