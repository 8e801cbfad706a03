"""The fitting stack: the latent-modulated SIREN, meta-training (theta) and fitting latents (phi).

Encoding a whole data set into a latent set on disk is :func:`funcml.latents.encode_signal_set`."""

from funcml.encoders.config import EncodeConfig, FieldConfig, TrainConfig
from funcml.encoders.fitting import decode, fit_latents
from funcml.encoders.model import FieldModel
from funcml.encoders.presets import Preset, get_preset, list_presets
from funcml.encoders.siren import ModulatedSiren, omega_schedule
from funcml.encoders.trainer import MetaTrainer, TrainResult

__all__ = [
    "EncodeConfig", "FieldConfig", "TrainConfig", "decode", "fit_latents", "FieldModel",
    "Preset", "get_preset", "list_presets", "ModulatedSiren", "omega_schedule", "MetaTrainer", "TrainResult",
]
