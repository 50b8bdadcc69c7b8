"""varprune: cross-layer channel pruning with variable pruning-rate sequences for ViT liver segmentation."""

__version__ = "0.1.0"
