"""img2dataset webdataset shards (`{key}.jpg` + `{key}.txt` [+ `{key}.json`]) as an exact-length stream.

Why not a plain `wds.WebDataset`: the trainer needs (1) the number of batches per epoch up front,
(2) the same number on every DDP rank (else ranks deadlock), (3) a skipped corrupt sample not to
shorten the epoch, and (4) a mid-epoch resume that replays the very same batches. So:

* the sample count comes from img2dataset's `{shard}_stats.json` ("successes") or one scan of the
  tar headers (cached per process), or is given (`num_samples`);
* each rank gets `num_samples // world_size` samples, in batches dealt round-robin to loader
  workers (global batch j comes from worker j % W, the order DataLoader returns them);
* shards are split across ranks, then workers, like `wds.split_by_node` / `wds.split_by_worker`
  but with the rank passed in (no process group needed) and a per-epoch seeded shard order; when
  there are fewer shards than rank x worker slots, every slot reads all shards and keeps every
  slots-th sample instead. A slot whose shards run out starts another pass (new shard order), so
  skips and uneven shards never shorten the epoch;
* samples pass a seeded `wds.shuffle` buffer; a sample's crop and caption choice are drawn from
  (seed, epoch, pass, hash(shard name, key)), independent of worker or position;
* resuming at batch b, each worker replays its stream up to its first batch >= b, checking skipped
  samples cheaply (caption present, JPEG decodes at 1/8 scale) instead of transforming them, and the
  worker ids are rotated by b so DataLoader's round-robin still returns batch b first.
"""
from __future__ import annotations

import json
import math
import random
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from .errors import CorruptImage, DataError, SkipCounter
from .nouns import CaptionSampler
from .readers import SOURCE_HELP, clean_caption, image_decodes, load_image
from .seeding import sample_rng, stable_hash
from .transforms import apply_transform

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext
MAX_CONSECUTIVE_BAD = 1000


def is_remote(source: str) -> bool:
    return "://" in source or source.startswith("pipe:")


def resolve_shards(source: str) -> list[str]:
    """Shard paths of a folder of `*.tar`, one tar, or a brace pattern like `shards/{00000..00009}.tar`."""
    from braceexpand import braceexpand  # a webdataset dependency

    if is_remote(source):
        return list(braceexpand(source))
    path = Path(source)
    if path.is_dir():
        shards = sorted(str(p) for p in path.glob("*.tar"))
        if not shards:
            raise DataError(f"data.source folder {source!r} holds no .tar shards; {SOURCE_HELP}")
        return shards
    if "{" in source:
        shards = list(braceexpand(source))
        missing = [s for s in shards if not Path(s).is_file()]
        if missing:
            raise DataError(f"data.source {source!r}: shard {missing[0]} does not exist ({len(missing)} of "
                            f"{len(shards)} missing); "
                            "fix the pattern's range or folder")
        return shards
    if path.is_file():
        return [str(path)]
    raise DataError(f"data.source {source!r} does not exist; {SOURCE_HELP}")


_counts: dict[tuple, int] = {}


def count_shard_samples(shard: str) -> int:
    """Image+caption samples in one shard: img2dataset's stats file if present, else a header scan."""
    path = Path(shard)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _counts:
        return _counts[key]
    count = None
    stats = path.with_name(path.name[: -len(".tar")] + "_stats.json") if path.name.endswith(".tar") else None
    if stats is not None and stats.is_file():
        try:
            count = int(json.loads(stats.read_text())["successes"])
        except (ValueError, KeyError, TypeError):
            count = None
    if count is None:
        count = _scan_tar(path)
    _counts[key] = count
    return count


def _scan_tar(path: Path) -> int:
    """Count keys having a caption and an image; reads only tar headers (data is seeked over)."""
    count, current, exts = 0, None, set()
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                match = _KEY_EXT.match(member.name)
                if not match:
                    continue
                key, ext = match.group(1), match.group(2).lower()
                if key != current:
                    count += "txt" in exts and bool(exts & set(IMAGE_EXTENSIONS))
                    current, exts = key, set()
                exts.add(ext)
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"shard {path} is not a readable tar ({err}); re-create it or leave it out of "
                        "data.source") from None
    return count + ("txt" in exts and bool(exts & set(IMAGE_EXTENSIONS)))


def count_samples(shards: list[str]) -> int:
    if any(is_remote(s) for s in shards):
        raise DataError("remote shards cannot be counted; give the dataset size (num_samples) explicitly")
    return sum(count_shard_samples(s) for s in shards)


class WebDatasetCaptions(IterableDataset):
    """This rank's (image, caption) samples of one epoch from webdataset shards, exactly `len(self)` of them.

    Call `configure(batch_size, epoch=, start_batch=, drop_last=)` before iterating under a
    DataLoader with that batch size (`build_dataloader` does); `len(self)` is then the number of
    samples still to come this epoch on this rank, so `len(loader)` is the number of batches.
    """

    def __init__(self, shards: list[str], transform: Callable[..., Any] | None = None, *,
                 num_samples: int | None = None,
                 rank: int = 0, world_size: int = 1, seed: int = 0, sampler: CaptionSampler | None = None,
                 shuffle_buffer: int = 1000, skips: SkipCounter | None = None):
        if not shards:
            raise DataError(f"no webdataset shards given; {SOURCE_HELP}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.shards = list(shards)
        self.num_samples = int(num_samples) if num_samples else count_samples(self.shards)
        if self.num_samples < world_size:
            raise DataError(f"shards {self.shards[0]}... hold {self.num_samples} image+caption samples, fewer than the "
                            f"{world_size} processes; check data.source")
        self.transform, self.sampler, self.seed = transform, sampler, seed
        self.rank, self.world_size, self.shuffle_buffer = rank, world_size, shuffle_buffer
        self.skips = skips if skips is not None else SkipCounter()
        self.batch_size, self.epoch, self.start_batch, self.drop_last = 1, 0, 0, False

    # ------------------------------------------------------------------ epoch plan
    def configure(self, batch_size: int, *, epoch: int = 0, start_batch: int = 0,
                  drop_last: bool = True) -> WebDatasetCaptions:
        self.batch_size, self.epoch, self.start_batch, self.drop_last = batch_size, epoch, start_batch, drop_last
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def samples_per_rank(self) -> int:
        return self.num_samples // self.world_size

    @property
    def num_batches(self) -> int:
        """Batches per epoch on each rank (the same on all ranks)."""
        if self.drop_last:
            return self.samples_per_rank // self.batch_size
        return math.ceil(self.samples_per_rank / self.batch_size)

    def _batch_len(self, j: int) -> int:
        if self.drop_last or j < self.num_batches - 1:
            return self.batch_size
        return self.samples_per_rank - (self.num_batches - 1) * self.batch_size

    def __len__(self) -> int:
        return sum(self._batch_len(j) for j in range(self.start_batch, self.num_batches))

    # ------------------------------------------------------------------ streaming
    def _on_tar_error(self, exn: Exception) -> bool:
        self.skips.add("corrupt_images", f"unreadable shard data ({exn.__class__.__name__}: {exn})")
        return True  # continue with the next sample/shard

    def _raw_samples(self, worker: int, workers: int) -> Iterator[dict[str, Any]]:
        """This (rank, worker) slot's shuffled raw samples, pass after pass."""
        import webdataset as wds

        slots, slot = self.world_size * workers, self.rank * workers + worker
        for epoch_pass in range(1 << 30):
            rng = np.random.default_rng([self.seed, self.epoch, epoch_pass])
            order = [self.shards[i] for i in rng.permutation(len(self.shards))]
            if len(order) >= slots:
                mine, keep = order[self.rank::self.world_size][worker::workers], None
            else:
                mine, keep = order, slot
            urls = [{"url": u} for u in mine]
            samples: Iterator[dict[str, Any]] = iter(wds.tariterators.tarfile_samples(urls, handler=self._on_tar_error))
            if keep is not None:
                samples = (s for k, s in enumerate(samples) if k % slots == keep)
            if self.shuffle_buffer > 1:
                key = [self.seed, self.epoch, epoch_pass, self.rank, worker]
                seed = int(np.random.default_rng(key).integers(1 << 62))
                samples = wds.filters.shuffle(self.shuffle_buffer, min(100, self.shuffle_buffer),
                                              rng=random.Random(seed))(samples)
            produced = 0
            for sample in samples:
                produced += 1
                sample["__pass__"] = epoch_pass
                yield sample
            if produced == 0:
                raise DataError(f"shards {mine[:3]}{'...' if len(mine) > 3 else ''} yielded no samples (empty or "
                                "unreadable tars); check data.source")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker_id, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker = (worker_id + self.start_batch) % workers  # rotated so DataLoader's round-robin starts at start_batch
        own = range(worker, self.num_batches, workers)
        replay = sum(self._batch_len(j) for j in own if j < self.start_batch)
        quota = sum(self._batch_len(j) for j in own if j >= self.start_batch)
        if quota == 0:
            return
        done, bad = 0, 0
        for sample in self._raw_samples(worker, workers):
            if bad > MAX_CONSECUTIVE_BAD:
                raise DataError(f"more than {MAX_CONSECUTIVE_BAD} consecutive unusable samples in "
                                f"{sample.get('__url__')}; "
                                "check the shards (corrupt images or empty captions)")
            name = f"{Path(str(sample.get('__url__', '?'))).name}:{sample.get('__key__')}"
            caption = clean_caption(bytes(sample.get("txt", b"")).decode("utf-8", errors="replace"))
            data = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
            if data is None:
                self.skips.add("missing_images", f"{name} has no image")
                bad += 1
                continue
            if not caption:
                self.skips.add("empty_captions", f"{name} has an empty caption")
                bad += 1
                continue
            if done < replay:  # resuming: step over batches already trained on, without transforming them
                if image_decodes(data):
                    done, bad = done + 1, 0
                else:
                    self.skips.add("corrupt_images", f"{name}")
                    bad += 1
                continue
            try:
                image = load_image(data)
            except CorruptImage as err:
                self.skips.add("corrupt_images", f"{name}: {err}")
                bad += 1
                continue
            rng = sample_rng(self.seed, self.epoch, sample["__pass__"], stable_hash(name))
            text = self.sampler(caption, rng) if self.sampler is not None else caption
            yield {"image": apply_transform(self.transform, image, rng), "caption": text}
            done, bad = done + 1, 0
            if done == replay + quota:
                return
