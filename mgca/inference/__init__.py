"""Zero-shot segmentation inference: preprocessing, sliding windows, adaptive semantic units."""
from .config import InferenceConfig
from .loading import is_random_init, load_inference_model
from .predictor import SegmentationPredictor, labels_from_scores, resolve_device, upsample_scores
from .units import meta_grid, meta_point_indices, unit_scores, uses_pixel_units
from .windows import preprocess, window_boxes

Predictor = SegmentationPredictor

__all__ = [
    "InferenceConfig", "Predictor", "is_random_init", "load_inference_model", "SegmentationPredictor", "labels_from_scores", "meta_grid",
    "meta_point_indices", "preprocess", "resolve_device", "unit_scores", "upsample_scores",
    "uses_pixel_units", "window_boxes",
]
