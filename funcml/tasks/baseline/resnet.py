"""ResNet-18-style CNNs for 1D, 2D and 3D signals (one definition, the convolution type by dimension).

BasicBlocks [2, 2, 2, 2] with widths ``w, 2w, 4w, 8w`` (``w = 64`` is ResNet-18), global average
pooling and a linear head. Small inputs (every side <= 32, e.g. MedMNIST 28) use a 3-wide
stride-1 stem without max-pooling, as MedMNIST's ResNet-18 (28) does; larger ones (64 x 64 images,
187-sample beats, volumes over 32) the ImageNet stem (7-wide, stride 2, then max-pooling).
"""

from __future__ import annotations

import torch
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVGPOOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


class BasicBlock(nn.Module):
    """Two 3-wide convolutions with batch norm and a (projected) identity shortcut."""

    def __init__(self, dim: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        conv, bn = _CONV[dim], _BN[dim]
        self.conv1 = conv(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(cout)
        self.conv2 = conv(cout, cout, 3, padding=1, bias=False)
        self.bn2 = bn(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            conv(cin, cout, 1, stride=stride, bias=False), bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """``(B, C, *spatial) -> (B, n_outputs)`` logits for ``dim``-D signals.

    Args:
        dim: 1, 2 or 3. in_channels: C. n_outputs: logits. width: channels of the first stage.
        small_input: the stride-1 stem without max-pooling (:func:`train_pixel_baseline` uses it up to 32 per side).
    """

    def __init__(self, dim: int, in_channels: int, n_outputs: int, width: int = 64, small_input: bool = True) -> None:
        super().__init__()
        if dim not in _CONV:
            raise ValueError(f"dim must be 1, 2 or 3; got {dim}")
        conv, bn = _CONV[dim], _BN[dim]
        if small_input:
            self.stem = nn.Sequential(conv(in_channels, width, 3, padding=1, bias=False), bn(width), nn.ReLU())
        else:
            self.stem = nn.Sequential(conv(in_channels, width, 7, stride=2, padding=3, bias=False), bn(width), nn.ReLU(),
                                      _MAXPOOL[dim](3, stride=2, padding=1))
        blocks, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2 ** i
            blocks += [BasicBlock(dim, cin, cout, stride), BasicBlock(dim, cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = _AVGPOOL[dim](1)
        self.fc = nn.Linear(cin, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))
