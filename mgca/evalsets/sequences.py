"""Labelled folders of frame sequences: ROOT/<clip>/images + ROOT/<clip>/masks, one clip per sub-folder.

Each clip's frames are its images in name order, matched to their masks by file stem, as a still folder's are
(`mgca.evalsets.folder`). `open_sequences("synthetic-video", root)` reads the moving miniature
(`mgca.pairs.synthetic_video.write_sequences`); `open_sequence_folder(FolderSource(classes, root, ...))` reads a
user's own clips with a class file (`mgca-eval --dataset folder-video`). Torch-free, so an exported engine is
evaluated on clips in the lean install.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from .folder import FolderSource, _image_files, folder_spec
from .readers import DatasetError, Item, SegmentationDataset, get_spec
from .specs import DatasetSpec, Layout, Part


@dataclass
class SequenceDataset:
    """Clips of one benchmark: `clips[i]` is clip i's frames in order (a SegmentationDataset; indexing loads one)."""

    spec: DatasetSpec
    root: Path
    names: list[str]
    clips: list[SegmentationDataset]

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self) -> Iterator[SegmentationDataset]:
        return iter(self.clips)

    @property
    def frames(self) -> int:
        return sum(len(clip) for clip in self.clips)


def clip_folders(root: str | Path) -> list[Path]:
    """The sub-folders of `root` that hold images/ and masks/, in name order; none is a one-line DatasetError."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; pass --root holding one folder per clip (CLIP/images + "
                           "CLIP/masks)")
    folders = sorted(p for p in root.iterdir() if (p / "images").is_dir() and (p / "masks").is_dir())
    if not folders:
        raise DatasetError(f"{root} holds no clip folders: expected ROOT/<clip>/images and ROOT/<clip>/masks, frames "
                           "matched by name")
    return folders


def _clip(spec: DatasetSpec, folder: Path) -> SegmentationDataset:
    images, masks = _image_files(folder / "images", "image"), _image_files(folder / "masks", "mask")
    if not images:
        raise DatasetError(f"clip {folder} has no frames in {folder / 'images'}")
    for have, lack, what in ((images, masks, "frame"), (masks, images, "mask")):
        unmatched = sorted(set(have) - set(lack))
        if unmatched:
            raise DatasetError(f"{what} {have[unmatched[0]]} of clip {folder.name} has no file of the same name "
                               f"beside it ({len(unmatched)} unmatched); add it or remove the {what}")
    layout = Layout("sequences", (Part(str(folder / "images"), str(folder / "masks"), "", ""),))
    return SegmentationDataset(spec, folder, layout, [Item(key, images[key], masks[key]) for key in sorted(images)])


def _dataset(spec: DatasetSpec, root: str | Path) -> SequenceDataset:
    folders = clip_folders(root)
    return SequenceDataset(spec, Path(root).expanduser(), [f.name for f in folders], [_clip(spec, f) for f in folders])


def open_sequences(name: str, root: str | Path) -> SequenceDataset:
    """A video benchmark of the registry (`synthetic-video`) under `root`."""
    spec = get_spec(name)
    if not spec.video:
        raise DatasetError(f"dataset {spec.name} is a set of still images, not clips; open it with open_dataset")
    return _dataset(spec, root)


def open_sequence_folder(source: FolderSource) -> SequenceDataset:
    """A user's labelled clips: ROOT/<clip>/images + masks, classes (and palette, background) as a still folder's."""
    if source.root is None:
        raise DatasetError("--dataset folder-video needs --root DIR holding one folder per clip (CLIP/images + "
                           "CLIP/masks)")
    spec = replace(folder_spec(source, f"Clips below {source.root}"), name="folder-video", video=True)
    return _dataset(spec, source.root)


__all__ = ["SequenceDataset", "clip_folders", "open_sequences", "open_sequence_folder"]
