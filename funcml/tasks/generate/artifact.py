"""A generator directory GEN: the generator, the field model that decodes its samples, a loss plot.

Layout (format ``funcml.generator`` version 1)::

    generator.json          id, config, classes, training summary, the latent set it was trained on
    generator.safetensors   EMA denoiser weights + the latent standardisation
    model/                  the field model (config.json + model.safetensors), id checked on load
    loss.png                training loss curve
"""

from __future__ import annotations

from pathlib import Path

from funcml.errors import ArtifactError

MODEL_SUBDIR = "model"


def save_generator_dir(generator, directory: str | Path, latent_set, model_dir: str | Path, model_id: str) -> str:
    """Write ``generator`` with a copy of its field model into ``directory``; return the id."""
    from funcml.encoders.model import copy_model_dir
    from funcml.tasks.generate.viz import plot_loss

    directory = Path(directory)
    extra = {"latent_set": {"path": str(Path(latent_set.path).resolve()),
                            "latent_checksum": latent_set.manifest["latent_checksum"], "task": latent_set.task,
                            "label_names": latent_set.label_names, "source": latent_set.manifest["source"]},
             "field_model_id": model_id, "signal_shape": list(latent_set.signal_shape)}
    gen_id = generator.save(directory, extra=extra)
    copy_model_dir(model_dir, directory / MODEL_SUBDIR)
    plot_loss(generator.history_, directory / "loss.png")
    return gen_id


def load_generator_dir(directory: str | Path, device="cpu"):
    """``(generator, field model, extra metadata)`` from a GEN directory (ids checked)."""
    from funcml.encoders.model import FieldModel
    from funcml.tasks.generate.generator import LatentGenerator

    gen = LatentGenerator.load(directory, device=device)
    extra = gen.meta_.get("extra", {})
    model = FieldModel.load(Path(directory) / MODEL_SUBDIR, device=device)
    if extra.get("field_model_id") not in (None, model.id):
        raise ArtifactError(f"{directory}/{MODEL_SUBDIR} is not the field model the generator was trained with")
    if model.config.latent_dim != gen.n_features_in_:
        raise ArtifactError(f"{directory}: the generator's latent dimension {gen.n_features_in_} does not fit its "
                            f"field model ({model.config.latent_dim})")
    return gen, model, extra
