"""Pixel baselines: ResNet-18-style CNNs (1D/2D/3D) trained on the raw signals."""

from funcml.tasks.baseline.resnet import ResNet18
from funcml.tasks.baseline.train import train_pixel_baseline

__all__ = ["ResNet18", "train_pixel_baseline"]
