"""Lean MGCA inference runtime: exported bundle -> label maps with numpy, OpenCV, onnxruntime and FAISS.

Never imports torch (tests/test_runtime.py checks it in a subprocess where torch cannot be imported).
"""
from .errors import BackendError, BundleError, RuntimeInputError, TextCacheError, VocabularyError
from .segmenter import Result, Segmenter

__all__ = ["Segmenter", "Result", "RuntimeInputError", "BundleError", "TextCacheError", "VocabularyError", "BackendError"]
