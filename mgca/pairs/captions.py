"""Datasets of (image, caption) training pairs and the factory that picks one from `data.source`.

Map-style (folder, CSV/TSV table, synthetic): `CaptionDataset`. An undecodable image is found
only when loaded; the dataset then returns the next decodable index instead (counted in
`.skips`), which keeps every batch full and the epoch length fixed -- important for a
contrastive loss whose negatives are the batch, and for DDP ranks that must step together.
Missing files and blank captions are filtered when the source is listed.

Webdataset shards: `WebDatasetCaptions` (see `shards.py`), an exact-length stream.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from PIL import Image
from torch.utils.data import Dataset

from ..config import DataConfig
from .errors import CorruptImage, DataError, SkipCounter
from .nouns import CaptionSampler
from .readers import SOURCE_HELP, CaptionList, load_image, read_caption_folder, read_caption_table
from .seeding import sample_rng
from .shards import WebDatasetCaptions, is_remote, resolve_shards
from .synthetic import PHRASE_TEMPLATES, SyntheticCaptions, caption_phrases
from .transforms import apply_transform

TABLE_SUFFIXES = (".csv", ".tsv", ".txt")
TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz")
MAX_CONSECUTIVE_CORRUPT = 100


class PairSource(Protocol):
    """Index-addressable raw pairs; `load` raises CorruptImage for an undecodable image."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> tuple[Image.Image, str]: ...


class CaptionFiles:
    """Pairs listed from a folder or a table; images are decoded on load."""

    def __init__(self, listing: CaptionList):
        self.pairs = listing.pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[Image.Image, str]:
        path, caption = self.pairs[index]
        try:
            return load_image(path), caption
        except CorruptImage as err:
            raise CorruptImage(f"{path}: {err}") from None


class CaptionDataset(Dataset):
    """Map-style training samples `{"image": transformed image, "caption": sampled text}`.

    Sample `i` of epoch `e` draws its crop and caption choice from rng(seed, e, i), so it is the
    same on any worker or rank and after a resume. Set the epoch with `set_epoch` before the
    loader starts its workers.
    """

    def __init__(self, source: PairSource, transform: Callable[..., Any] | None = None, *,
                 sampler: CaptionSampler | None = None, seed: int = 0, skips: SkipCounter | None = None):
        if len(source) == 0:
            raise DataError(f"data source has no samples; {SOURCE_HELP}")
        self.source, self.transform, self.sampler, self.seed = source, transform, sampler, seed
        self.skips = skips if skips is not None else SkipCounter()
        self.epoch = 0
        self._corrupt: set[int] = set()  # indices known undecodable in this process

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def _load_valid(self, index: int) -> tuple[Image.Image, str]:
        """Pair `index`, or the next one that decodes and has a caption (wrapping around)."""
        size = len(self.source)
        for step in range(min(size, MAX_CONSECUTIVE_CORRUPT + 1)):
            current = (index + step) % size
            if current in self._corrupt:
                continue
            try:
                image, caption = self.source.load(current)
            except CorruptImage as err:
                self._corrupt.add(current)
                self.skips.add("corrupt_images", str(err))
                continue
            if not caption.strip():
                self._corrupt.add(current)
                self.skips.add("empty_captions", f"sample {current} has an empty caption")
                continue
            return image, caption
        raise DataError(f"samples {index}..{index + step} of data.source are all unreadable; check the images")

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, caption = self._load_valid(index)
        rng = sample_rng(self.seed, self.epoch, index)
        text = self.sampler(caption, rng) if self.sampler is not None else caption
        return {"image": apply_transform(self.transform, image, rng), "caption": text}


def detect_source(source: str | None) -> str:
    """'synthetic', 'shards', 'folder' or 'table' for a `data.source`, or a DataError saying what to give."""
    if not source:
        raise DataError(f"data.source is not set; {SOURCE_HELP}")
    if source == "synthetic":
        return "synthetic"
    if is_remote(source) or ("{" in source and ".tar" in source):
        return "shards"
    path = Path(source)
    if path.is_file():
        name = path.name.lower()
        if name.endswith(TAR_SUFFIXES):
            return "shards"
        if name.endswith(TABLE_SUFFIXES):
            return "table"
        raise DataError(f"data.source {source!r} is a {path.suffix or 'suffix-less'} file, not a .csv/.tsv table or a "
                        f".tar shard; {SOURCE_HELP}")
    if path.is_dir():
        return "shards" if any(path.glob("*.tar")) else "folder"
    raise DataError(f"data.source {source!r} does not exist; {SOURCE_HELP}")


def build_caption_dataset(cfg: DataConfig, transform: Callable[..., Any] | None = None, *, rank: int = 0,
                          world_size: int = 1,
                          seed: int | None = None, num_samples: int | None = None, shuffle_buffer: int = 1000,
                          skips: SkipCounter | None = None) -> CaptionDataset | WebDatasetCaptions:
    """The training pairs of `cfg.source` with `transform` and (if `cfg.noun_prompts`) noun-prompt sampling.

    `seed` drives crops, caption choices and shard shuffles (default `cfg.seed`); `cfg.seed` alone
    decides the synthetic images. Map-style datasets hold every sample (the loader's sampler
    splits them across ranks); shard streams hold this rank's share. `num_samples` (default
    `cfg.num_samples` if that field exists) skips counting the shards' samples.
    """
    kind = detect_source(cfg.source)
    seed = cfg.seed if seed is None else seed
    if kind == "synthetic":  # generated captions name their objects exactly; prompts use their own wording
        sampler = CaptionSampler(cfg.noun_prompts, extract=caption_phrases, templates=PHRASE_TEMPLATES)
    else:
        sampler = CaptionSampler(cfg.noun_prompts)
    skips = skips if skips is not None else SkipCounter()
    if kind == "shards":
        num_samples = num_samples or getattr(cfg, "num_samples", 0) or None
        return WebDatasetCaptions(resolve_shards(cfg.source), transform, num_samples=num_samples, rank=rank,
                                  world_size=world_size,
                                  seed=seed, sampler=sampler, shuffle_buffer=shuffle_buffer, skips=skips)
    if kind == "synthetic":
        source: PairSource = SyntheticCaptions.from_world(cfg.synthetic, cfg.synthetic_size, cfg.image_size, cfg.seed)
    elif kind == "folder":
        source = CaptionFiles(read_caption_folder(cfg.source, skips))
    else:
        source = CaptionFiles(read_caption_table(cfg.source, skips))
    return CaptionDataset(source, transform, sampler=sampler, seed=seed, skips=skips)
