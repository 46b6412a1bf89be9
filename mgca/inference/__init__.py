"""Zero-shot segmentation inference in PyTorch: preprocessing, sliding windows, adaptive semantic units.

Settings and geometry are the contract's (`runtime.contract`), shared with the numpy runtime.
"""
from .config import InferenceConfig
from .loading import is_random_init, load_inference_model
from .predictor import SegmentationPredictor, labels_from_scores, upsample_scores
from .units import unit_scores
from .windows import preprocess

__all__ = [
    "InferenceConfig", "SegmentationPredictor", "is_random_init", "labels_from_scores", "load_inference_model",
    "preprocess", "unit_scores", "upsample_scores",
]
