"""Latent sets: encoded datasets on disk (safetensors + JSON manifest, memory-mapped)."""

from funcml.latents.evaluate import evaluate_latent_set
from funcml.latents.latentset import LatentSet, LatentSetWriter, latent_checksum, validate_manifest, write_latent_set

__all__ = ["LatentSet", "LatentSetWriter", "evaluate_latent_set", "latent_checksum", "validate_manifest",
           "write_latent_set"]
