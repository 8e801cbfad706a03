"""Segmentation by querying fields: a head predicts class logits at any coordinate from the shared
network's features and the latent; plus a pixel U-Net baseline and segmentation metrics."""
