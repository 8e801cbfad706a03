"""A scikit-learn transformer from signals to latent vectors: ``FieldEncoder``.

``fit`` loads a trained field model (``model=DIR``) or meta-trains one on the signals it is given
(``model=None``: a preset, e.g. ``cpu-image``, with optional overrides); ``transform`` encodes
signals ``(n, C, *spatial)`` in [0, 1] (or flattened ``(n, C*prod(spatial))`` rows) to latents
``(n, P)`` by test-time optimisation with the network frozen. Encoding runs in fixed chunks of
``batch_size`` seeded like ``funcml encode``, so ``transform`` gives the latents ``funcml encode``
writes for the same signals, batch size and seed. So::

    make_pipeline(FieldEncoder(model="runs/breast-model"), XGBClassifier())

classifies raw images through their latents.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted


class FieldEncoder(TransformerMixin, BaseEstimator):
    """Signals -> MedFuncta latents.

    Args:
        model: a model directory from ``funcml train`` (or a latent set's embedded ``model/``);
            None meta-trains a model on the signals passed to ``fit``.
        preset: the preset used for meta-training (``cpu-image``, ``cpu-ecg``, ``cpu-volume``, ...).
        steps: meta-training steps (None: the preset's).
        train_options: further preset overrides for meta-training (``{"width": 64, "latent_dim": 128}``).
        model_dir: where ``fit`` writes the meta-trained model (None: a temporary folder, removed).
        signal_shape: ``(C, *spatial)`` of one signal when ``X`` comes flattened ``(n, features)``;
            default: the model's shape (or ``(1, features)`` 1D signals when meta-training).
        encode_steps: test-time steps H (None: the model's). batch_size: signals encoded together.
        device: ``cpu``, ``cuda`` or ``auto``. seed: seeds the context subsets (and meta-training).
        progress: show progress bars.

    Attributes:
        model_: the :class:`~funcml.encoders.model.FieldModel`; model_id_: its id;
        signal_shape_: the shape one signal is read as; n_features_in_.
    """

    def __init__(self, model=None, preset="cpu-image", steps=None, train_options=None, model_dir=None,
                 signal_shape=None, encode_steps=None, batch_size=64, device="cpu", seed=0, progress=False):
        self.model = model
        self.preset = preset
        self.steps = steps
        self.train_options = train_options
        self.model_dir = model_dir
        self.signal_shape = signal_shape
        self.encode_steps = encode_steps
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.progress = progress

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.target_tags.required = False
        tags.requires_fit = True
        return tags

    # -- input ----------------------------------------------------------------------------------
    def _signals(self, X, shape: tuple[int, ...] | None) -> np.ndarray:
        """``X`` as float32 ``(n, *shape)`` signals in [0, 1] (ValueError otherwise)."""
        X = check_array(X, allow_nd=True, dtype=np.float32, ensure_all_finite=True)
        if shape is None:
            shape = tuple(X.shape[1:]) if X.ndim > 2 else (1, X.shape[1])
        shape = tuple(int(s) for s in shape)
        if int(np.prod(X.shape[1:])) != int(np.prod(shape)):
            raise ValueError(f"signals of shape {X.shape[1:]} cannot be read as {shape}")
        X = X.reshape(len(X), *shape)
        lo, hi = float(X.min(initial=0.0)), float(X.max(initial=0.0))
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"signal values must lie in [0, 1]; found range [{lo:.4g}, {hi:.4g}]")
        return X

    # -- fit / transform ------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Load ``model`` or meta-train one on ``X``; returns self."""
        from funcml.devices import resolve_device
        from funcml.encoders.model import FieldModel

        dev = resolve_device(self.device)
        if self.model is not None:
            model = FieldModel.load(self.model, device=dev)
            shape = tuple(self.signal_shape) if self.signal_shape is not None else model.signal_shape
            X = self._signals(X, shape if np.ndim(X) == 2 else None)
        else:
            X = self._signals(X, self.signal_shape)
            model = self._meta_train(X, dev)
        model.check_signals(tuple(X.shape[1:]), allow_other_resolution=True)
        self.model_ = model
        self.model_id_ = model.id
        self.signal_shape_ = tuple(int(s) for s in X.shape[1:])
        self.n_features_in_ = int(np.prod(self.signal_shape_))
        return self

    def _meta_train(self, X: np.ndarray, dev: torch.device):
        from funcml.data.base import ArraySignalSet
        from funcml.encoders.model import FieldModel
        from funcml.encoders.presets import get_preset
        from funcml.encoders.trainer import MetaTrainer
        from funcml.io import sha256_bytes

        signals = ArraySignalSet(X, name="fieldencoder", spec="FieldEncoder.fit", splits=np.zeros(len(X), np.uint8),
                                 labels=None, task="none", label_names=None,
                                 fingerprint=sha256_bytes(np.ascontiguousarray(X).tobytes()))
        preset = get_preset(self.preset)
        overrides = {"steps": self.steps, "seed": self.seed, **(self.train_options or {})}
        field_cfg, train_cfg = preset.build(signals.dim, signals.channels, **overrides)
        out = Path(self.model_dir) if self.model_dir is not None else Path(tempfile.mkdtemp(prefix="funcml-encoder-"))
        try:
            MetaTrainer(field_cfg, train_cfg, signals, out, dev, overwrite=True, progress=self.progress).run()
            return FieldModel.load(out, device=dev)
        finally:
            if self.model_dir is None:
                shutil.rmtree(out, ignore_errors=True)

    def transform(self, X) -> np.ndarray:
        """Latents ``(n, P)`` float32 of signals ``X``."""
        from funcml.progress import progress_bar

        from funcml.encoders.config import replace
        from funcml.encoders.fitting import fit_latents
        from funcml.seeding import generator

        check_is_fitted(self, "model_")
        X = self._signals(X, self.signal_shape_ if np.ndim(X) == 2 else None)
        self.model_.check_signals(tuple(X.shape[1:]), allow_other_resolution=True)
        cfg = replace(self.model_.encode_defaults.at_steps(self.encode_steps), seed=self.seed,
                      batch_size=self.batch_size).validate()
        out = np.empty((len(X), self.model_.config.latent_dim), dtype=np.float32)
        bs = cfg.batch_size
        for chunk, start in enumerate(progress_bar(range(0, len(X), bs), desc="encode", disable=not self.progress,
                                           leave=False)):
            x = torch.from_numpy(X[start:start + bs]).to(self.model_.device)
            phi = fit_latents(self.model_.net, x, cfg, generator=generator(cfg.seed, "encode", chunk))
            out[start:start + bs] = phi.cpu().numpy()
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "model_")
        return np.asarray([f"phi_{i}" for i in range(self.model_.config.latent_dim)], dtype=object)

    def inverse_transform(self, Z) -> np.ndarray:
        """Decode latents ``(n, P)`` to signals ``(n, C, *spatial)`` on the fitted grid."""
        check_is_fitted(self, "model_")
        z = torch.as_tensor(np.asarray(Z, dtype=np.float32)).to(self.model_.device)
        return self.model_.decode(z, self.signal_shape_[1:]).cpu().numpy()
