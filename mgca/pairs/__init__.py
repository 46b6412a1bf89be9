"""Image-caption training data: sources, noun-prompt augmentation, transforms, batching.

    build_dataloader(cfg.data, build_train_transform(cfg.data), batch_size,
                     rank=, world_size=, seed=, epoch=, start_batch=)

Sources (`data.source`): "synthetic", webdataset shards (folder / .tar / brace pattern), a folder
of images + same-name .txt captions, or a .csv/.tsv table of image,caption.
"""
from .captions import CaptionDataset, CaptionFiles, build_caption_dataset, detect_source
from .errors import CorruptImage, DataError, SkipCounter
from .loader import build_dataloader, collate_captions
from .nouns import CaptionSampler, NounModelMissing, choose_caption, extract_nouns, imagenet_templates, noun_prompts
from .readers import load_image, read_caption_folder, read_caption_table
from .shards import WebDatasetCaptions, count_samples, count_shard_samples, resolve_shards
from .synthetic import CLASS_NAMES, COLORS, SHAPES, TEXTURES, SyntheticCaptions, SyntheticSample
from .transforms import (
    RandomResizedCropNormalize,
    ResizeCenterCropNormalize,
    build_eval_transform,
    build_train_transform,
)

__all__ = [
    "CLASS_NAMES", "COLORS", "SHAPES", "TEXTURES",
    "CaptionDataset", "CaptionFiles", "CaptionSampler", "CorruptImage", "DataError", "NounModelMissing",
    "RandomResizedCropNormalize", "ResizeCenterCropNormalize", "SkipCounter", "SyntheticCaptions", "SyntheticSample",
    "WebDatasetCaptions", "build_caption_dataset", "build_dataloader", "build_eval_transform", "build_train_transform",
    "choose_caption", "collate_captions", "count_samples", "count_shard_samples", "detect_source", "extract_nouns",
    "imagenet_templates", "load_image", "noun_prompts", "read_caption_folder", "read_caption_table", "resolve_shards",
]
