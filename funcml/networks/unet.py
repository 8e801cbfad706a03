"""A U-Net in 1D, 2D or 3D (Ronneberger et al., MICCAI 2015): ``(B, C, *S)`` -> ``(B, K, *S)``.

The segmentation baseline trains it on pixels (:mod:`funcml.tasks.segment.unet`); a query head uses
it as the encoder of the observed signal (``QueryHeadConfig.encoder = "unet"``), whose output
features it reads around each query coordinate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from funcml.errors import ConfigError


def _layers(dim: int):
    return getattr(nn, f"Conv{dim}d"), getattr(nn, f"ConvTranspose{dim}d"), getattr(nn, f"MaxPool{dim}d")


class _Block(nn.Sequential):
    def __init__(self, dim: int, cin: int, cout: int) -> None:
        conv = _layers(dim)[0]
        super().__init__(conv(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.ReLU(inplace=True),
                         conv(cout, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """U-Net: ``depth`` down/up levels, ``base * 2**level`` channels; ``(B, C, *S)`` -> logits ``(B, K, *S)``."""

    def __init__(self, dim: int, in_channels: int, n_classes: int, base: int = 16, depth: int = 3) -> None:
        super().__init__()
        if dim not in (1, 2, 3):
            raise ConfigError(f"U-Net dimension must be 1, 2 or 3; got {dim}")
        _, up, pool = _layers(dim)
        self.depth = depth
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_Block(dim, in_channels, widths[0])] +
                                  [_Block(dim, widths[i], widths[i + 1]) for i in range(depth)])
        self.pool = pool(2)
        self.up = nn.ModuleList(up(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth)))
        self.dec = nn.ModuleList(_Block(dim, 2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.out = _layers(dim)[0](widths[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        mult = 2 ** self.depth
        pad = []
        for s in reversed(spatial):
            pad += [0, (-s) % mult]
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h)
            if i < self.depth:
                skips.append(h)
                h = self.pool(h)
        for up, dec in zip(self.up, self.dec):
            h = dec(torch.cat([up(h), skips.pop()], dim=1))
        logits = self.out(h)
        return logits[(..., *[slice(0, s) for s in spatial])]
