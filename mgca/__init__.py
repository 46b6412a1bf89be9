"""mgca: open-vocabulary semantic segmentation learned from image-caption pairs (MGCA)."""
__version__ = "0.1.0"
