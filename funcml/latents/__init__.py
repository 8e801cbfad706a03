"""Latent sets: encoded datasets on disk (safetensors + JSON manifest, memory-mapped), and the job that
encodes a data set into one with a field model (:func:`encode_signal_set`, resumable, also under torchrun)."""

from funcml.latents.encode import encode_signal_set
from funcml.latents.evaluate import evaluate_latent_set
from funcml.latents.latentset import LatentSet, LatentSetWriter, latent_checksum, validate_manifest, write_latent_set

__all__ = ["LatentSet", "LatentSetWriter", "encode_signal_set", "evaluate_latent_set", "latent_checksum",
           "validate_manifest", "write_latent_set"]
