"""Calibration images: a folder (or arrays) -> model-input windows, preprocessed exactly as inference does.

Preprocessing follows docs/inference-contract.md, "Preprocessing" and "Sliding windows": resize
the shorter side to `short_side` (cv2 INTER_LINEAR on uint8), scale to [0, 1], CLIP mean/std
normalise, zero-pad to multiples of the output stride, cut mmseg sliding windows of `window`
pixels every `stride` pixels and zero-pad each to `window x window`. With an export's settings
(`InferenceSettings.for_window`: short side = window, stride = window / 2) a typical 4:3 photo gives
2-3 windows, so the calibration statistics are those of the windows the runtime will actually feed the model.

numpy + OpenCV only (no torch), built on `runtime.preprocess`: the same code serves the
export's parity check and the onnxruntime calibration reader.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime import image_files
from runtime.contract import INPUT_NAME, InferenceSettings
from runtime.errors import ImageFileError, MgcaError, RuntimeInputError, SettingsError
from runtime.preprocess import check_image, prepare


class CalibrationError(MgcaError, ValueError):
    """Calibration images or settings cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Preprocess:
    """The contract's preprocessing of one model: the inference settings plus the model's normalisation
    (mean/std per RGB channel) and output stride."""

    settings: InferenceSettings
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_stride: int

    def __post_init__(self) -> None:
        try:
            self.settings.validate(self.output_stride)
        except SettingsError as err:
            raise CalibrationError(f"calibration preprocessing: {err}") from None

    @property
    def window(self) -> int:
        return self.settings.window

    def windows(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 H x W x 3 -> float32 n x 3 x window x window (all sliding windows of the image)."""
        return image_windows(image, self.settings, self.output_stride, self.mean, self.std)


def image_windows(image: np.ndarray, settings: InferenceSettings, output_stride: int,
                  mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The contract's preprocessing + sliding windows of one RGB uint8 image (the runtime's own code,
    so calibration statistics are those of the windows the runtime feeds the model)."""
    try:
        image = check_image(image, "calibration image")  # the runtime's checks and lossless conversions
    except RuntimeInputError as err:
        raise CalibrationError(str(err)) from None
    return prepare(np.ascontiguousarray(image), settings, output_stride,
                   np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)).crops


def read_rgb(path: str | Path) -> np.ndarray | None:
    """An RGB uint8 image, upright by its EXIF orientation (runtime.image_files, as every tool reads images), or
    None when the file cannot be decoded."""
    try:
        return image_files.read_rgb(path)
    except ImageFileError:
        return None


def read_images(folder: str | Path, limit: int | None = None) -> tuple[list[np.ndarray], list[Path]]:
    """Decodable images directly in `folder` (sorted by name, so calibration is reproducible) and their paths;
    unreadable files are skipped, none at all is an error."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CalibrationError(f"image folder {root} does not exist or is not a directory")
    files = image_files.list_images(root)
    if not files:
        raise CalibrationError(f"image folder {root} holds no images ({', '.join(image_files.IMAGE_SUFFIXES)})")
    images, paths = [], []
    for path in files:
        image = read_rgb(path)
        if image is not None:
            images.append(image)
            paths.append(path)
        if limit and len(images) >= limit:
            break
    if not images:
        raise CalibrationError(f"no image in {folder} could be decoded; give a folder of JPEG/PNG files")
    return images, paths


def synthetic_images(count: int, size: tuple[int, int] = (360, 480), seed: int = 0) -> list[np.ndarray]:
    """Deterministic photo-like RGB images (smooth gradients, filled shapes, texture, noise) for
    parity checks and calibration when the user gives no image folder."""
    rng = np.random.default_rng(seed)
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for _ in range(count):
        base = rng.uniform(0, 255, 3)[None, None, :] * (1 - yy[..., None] / height) \
            + rng.uniform(0, 255, 3)[None, None, :] * (yy[..., None] / height)
        image = np.clip(base, 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(3, 8))):
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
            r = int(rng.integers(min(height, width) // 12, min(height, width) // 3))
            if rng.random() < 0.5:
                cv2.circle(image, (cx, cy), r, color, -1)
            else:
                cv2.rectangle(image, (cx - r, cy - r // 2), (cx + r, cy + r // 2), color, -1)
        stripes = (np.sin(xx / rng.uniform(3, 12)) * rng.uniform(0, 20))[..., None]
        noise = rng.normal(0, 6, image.shape)
        images.append(np.clip(image.astype(np.float32) + stripes + noise, 0, 255).astype(np.uint8))
    return images


def windows_of(images: Iterable[np.ndarray], preprocess: Preprocess, max_windows: int | None = None) -> np.ndarray:
    """All windows of `images`, stacked (n x 3 x win x win float32), at most `max_windows`."""
    parts, total = [], 0
    for image in images:
        crops = preprocess.windows(image)
        parts.append(crops)
        total += len(crops)
        if max_windows and total >= max_windows:
            break
    if not parts:
        raise CalibrationError("no images to preprocess")
    stacked = np.concatenate(parts)
    return stacked[:max_windows] if max_windows else stacked


def _base_reader():
    try:
        from onnxruntime.quantization import CalibrationDataReader
    except ImportError:  # keep the preprocessing usable without the quantisation tools
        return object
    return CalibrationDataReader


class ImageFolderCalibrationReader(_base_reader()):  # type: ignore[misc]
    """onnxruntime `CalibrationDataReader` over a folder of images (or given RGB arrays).

    Yields `{input_name: float32 batch x 3 x win x win}` of preprocessed windows; `limit` caps the
    number of images read, `max_windows` the number of windows. `rewind()` starts over (the
    calibrator may read the data more than once).
    """

    def __init__(self, source: str | Path | Sequence[np.ndarray], preprocess: Preprocess, input_name: str = INPUT_NAME,
                 limit: int | None = 64, max_windows: int | None = None, batch_size: int = 1):
        if batch_size < 1:
            raise CalibrationError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(source, (str, Path)):
            images, self.paths = read_images(source, limit)
        else:
            images, self.paths = list(source)[:limit] if limit else list(source), []
            if not images:
                raise CalibrationError("no calibration images given")
        self.input_name = input_name
        self.batch_size = batch_size
        self.preprocess = preprocess
        self.windows = windows_of(images, preprocess, max_windows)
        self.num_images = len(images)
        self._position = 0

    def __len__(self) -> int:
        return -(-len(self.windows) // self.batch_size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self.windows):
            return None
        batch = self.windows[self._position:self._position + self.batch_size]
        self._position += self.batch_size
        return {self.input_name: np.ascontiguousarray(batch)}

    def rewind(self) -> None:
        self._position = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.rewind()
        while (item := self.get_next()) is not None:
            yield item


__all__ = ["Preprocess", "ImageFolderCalibrationReader", "CalibrationError", "image_windows",
           "read_rgb", "read_images", "synthetic_images", "windows_of"]
