"""A torch Dataset view of a latent set (memory-mapped rows, converted on access)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class LatentDataset(Dataset):
    """``(latent (P,) float32, label (L,) int64)`` pairs; labels are -1 when the set has none."""

    def __init__(self, latent_set, indices: np.ndarray | None = None) -> None:
        self.set = latent_set
        self.indices = np.arange(len(latent_set)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[i])
        z = torch.from_numpy(np.array(self.set.latents[j], dtype=np.float32))
        if self.set.labels is None:
            y = torch.full((1,), -1, dtype=torch.int64)
        else:
            y = torch.from_numpy(np.array(self.set.labels[j], dtype=np.int64))
        return z, y
