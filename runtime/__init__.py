"""Lean MGCA inference runtime: exported bundle -> label maps with numpy, OpenCV, onnxruntime and FAISS.

Never imports torch (tests/test_runtime_install.py checks it in a subprocess where torch cannot be imported).
`runtime.contract` is the bottom layer every other package builds on: formats, settings, geometry.
"""
from .contract import InferenceSettings
from .errors import (
    BackendError,
    BundleError,
    ImageFileError,
    MgcaError,
    OutputPathError,
    RuntimeInputError,
    SettingsError,
    TextCacheError,
    VocabularyError,
)
from .segmenter import Result, Segmenter
from .temporal import TemporalState

__all__ = ["Segmenter", "Result", "TemporalState", "InferenceSettings", "MgcaError", "RuntimeInputError",
           "SettingsError", "BundleError",
           "TextCacheError", "VocabularyError", "BackendError", "OutputPathError", "ImageFileError"]
