"""Dataset readers on small fixture trees built here: layouts, label conventions, COCO rasterising, errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgca.evalsets import DATASETS, DatasetError, get_spec, open_dataset
from mgca.evalsets.coco import coco_object_label, decode_rle, polygon_mask, rle_counts_from_string
from mgca.evalsets.specs import voc_palette


def write_image(path: Path, height: int, width: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_label(path: Path, label: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(label.astype(np.uint8), mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette([c for rgb in voc_palette() for c in rgb])
    image.save(path)


def label_grid(height: int, width: int, values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.uint8)[np.arange(height * width) % len(values)].reshape(height, width)


def make_voc(root: Path, names=("a", "b")) -> dict[str, np.ndarray]:
    base = root / "VOCdevkit" / "VOC2012"
    labels = {}
    for i, name in enumerate(names):
        write_image(base / "JPEGImages" / f"{name}.jpg", 12, 16 + i, seed=i)
        labels[name] = label_grid(12, 16 + i, [0, 5, 20, 255])
        write_label(base / "SegmentationClass" / f"{name}.png", labels[name], palette=True)
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")
    return labels


def test_registry_has_the_eight_benchmarks_with_mmseg_class_counts():
    counts = {name: spec.num_classes for name, spec in DATASETS.items()}
    assert counts == {"voc21": 21, "voc20": 20, "context60": 60, "context59": 59, "coco_object": 81,
                      "coco_stuff": 171, "ade20k": 150, "cityscapes": 19, "synthetic": 40,
                      "synthetic-stuff": 44, "synthetic-video": 40}
    with_bg = {name for name, spec in DATASETS.items() if spec.with_background}
    assert with_bg == {"voc21", "context60", "coco_object"}
    assert all(DATASETS[n].background_threshold is not None for n in with_bg)
    assert all(spec.background_threshold is None for n, spec in DATASETS.items() if n not in with_bg)
    assert all(spec.ignore_index == 255 for spec in DATASETS.values())
    assert DATASETS["voc21"].prompt_classes == DATASETS["voc20"].classes
    assert DATASETS["context60"].classes[1:] == DATASETS["context59"].classes
    assert DATASETS["coco_object"].classes[1:] == DATASETS["coco_stuff"].classes[:80]
    assert DATASETS["ade20k"].classes[:3] == ("wall", "building",
                                              "sky") and DATASETS["cityscapes"].classes[-1] == "bicycle"
    assert get_spec("VOC").name == "voc21" and get_spec("coco_stuff164k").name == "coco_stuff"
    # the synthetic benchmark prompts its 40 object classes; its backdrop is ignored like VOC20's background
    synthetic = DATASETS["synthetic"]
    assert synthetic.prompt_classes == synthetic.classes and synthetic.classes[0] == "red circle"


def test_synthetic_benchmark_folder_round_trip(tmp_path):
    """write_benchmark's images and masks read back through the benchmark reader exactly as generated."""
    from mgca.pairs.synthetic import CLASS_NAMES, SyntheticCaptions, write_benchmark

    root = write_benchmark(tmp_path / "bench", count=5, image_size=48, seed=7)
    dataset = open_dataset("synthetic", root)
    assert len(dataset) == 5 and dataset.layout.name == "synthetic"
    source = SyntheticCaptions(5, 48, seed=7)
    for index, sample in enumerate(dataset):
        expected = source.render(index)
        np.testing.assert_array_equal(sample.image, np.asarray(expected.image))
        names = [CLASS_NAMES[k] for k in expected.mask.ravel()]
        classes = dataset.spec.classes
        want = np.array([classes.index(n) if n in classes else 255 for n in names]).reshape(expected.mask.shape)
        np.testing.assert_array_equal(sample.label, want)
        assert (sample.label == 255).any() and (sample.label < 40).any()
    stamp = (root / "benchmark.json").stat().st_mtime_ns
    assert write_benchmark(root, count=5, image_size=48, seed=7) == root  # same recipe: reused, not rewritten
    assert (root / "benchmark.json").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="does not exist under --root"):
        open_dataset("synthetic", tmp_path / "bench" / "images")


def test_voc_mmseg_layout_found_below_the_root(tmp_path):
    labels = make_voc(tmp_path)
    dataset = open_dataset("voc21", tmp_path)
    assert dataset.layout.name == "mmseg" and len(dataset) == 2
    sample = dataset[1]
    assert sample.name == "b" and sample.image.shape == (12, 17, 3) and sample.image.dtype == np.uint8
    np.testing.assert_array_equal(sample.label, labels["b"])


def test_voc20_reduces_the_zero_label(tmp_path):
    labels = make_voc(tmp_path)
    label = open_dataset("voc20", tmp_path / "VOCdevkit" / "VOC2012")[0].label
    expected = labels["a"].astype(np.int64) - 1
    expected[(labels["a"] == 0) | (labels["a"] == 255)] = 255
    np.testing.assert_array_equal(label, expected)


def test_voc_sample_layout_decodes_rgb_palette_targets(tmp_path):
    palette = voc_palette()
    index = label_grid(9, 9, [0, 1, 15, 255, 7])
    rgb = np.asarray(palette, dtype=np.uint8)[index]
    rgb[0, 0] = (1, 2, 3)  # a colour outside the palette is void
    write_image(tmp_path / "samples" / "7_image.png", 9, 9)
    Image.fromarray(rgb).save(tmp_path / "samples" / "7_target.png")
    write_image(tmp_path / "misc" / "x.jpg", 9, 9)
    write_label(tmp_path / "misc" / "x.png", index, palette=True)
    dataset = open_dataset("voc21", tmp_path)
    assert dataset.layout.name == "sample" and [i.name for i in dataset.items] == ["7", "x"]
    expected = index.astype(np.int64)
    expected[0, 0] = 255
    np.testing.assert_array_equal(dataset[0].label, expected)
    np.testing.assert_array_equal(dataset[1].label, index)


def test_context60_and_59(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2010"
    label = label_grid(8, 10, [0, 1, 59, 30])
    write_image(base / "JPEGImages" / "c1.jpg", 8, 10)
    write_label(base / "SegmentationClassContext" / "c1.png", label)
    (base / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (base / "ImageSets" / "SegmentationContext" / "val.txt").write_text("c1\n")
    np.testing.assert_array_equal(open_dataset("context60", tmp_path)[0].label, label)
    reduced = open_dataset("context59", tmp_path)[0].label
    assert sorted(np.unique(reduced).tolist()) == [0, 29, 58, 255]


@pytest.mark.parametrize("name, suffix",
                         [("coco_stuff", "_labelTrainIds.png"), ("coco_object", "_instanceTrainIds.png")])
def test_coco_mmseg_layouts(tmp_path, name, suffix):
    label = label_grid(6, 7, [0, 3, 80, 255])
    write_image(tmp_path / "images" / "val2017" / "000000000001.jpg", 6, 7)
    write_label(tmp_path / "annotations" / "val2017" / f"000000000001{suffix}", label)
    dataset = open_dataset(name, tmp_path)
    assert dataset.layout.name == "mmseg"
    np.testing.assert_array_equal(dataset[0].label, label)


def test_ade20k_standard_and_sample_layouts(tmp_path):
    label = label_grid(10, 12, [0, 1, 150, 42])
    base = tmp_path / "ADEChallengeData2016"
    write_image(base / "images" / "validation" / "ADE_val_1.jpg", 10, 12)
    write_label(base / "annotations" / "validation" / "ADE_val_1.png", label)
    sample = tmp_path / "sample"
    write_image(sample / "sampleData" / "images" / "ADE_val_2.jpg", 10, 12)
    write_label(sample / "sampleData" / "annotations" / "ADE_val_2.png", label)
    for root, layout in ((tmp_path, "mmseg"), (sample, "sample")):
        dataset = open_dataset("ade20k", root)
        assert dataset.layout.name == layout
        assert sorted(np.unique(dataset[0].label).tolist()) == [0, 41, 149, 255]


def test_cityscapes_scans_city_folders(tmp_path):
    for city, stem in (("aachen", "aachen_000000_000019"), ("bonn", "bonn_000001_000019")):
        write_image(tmp_path / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", 8, 16)
        write_label(tmp_path / "gtFine" / "val" / city / f"{stem}_gtFine_labelTrainIds.png",
                    label_grid(8, 16, [0, 18, 255]))
        write_label(tmp_path / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png", label_grid(8, 16, [7, 33]))
    dataset = open_dataset("cityscapes", tmp_path)
    assert [i.name for i in dataset.items] == ["aachen/aachen_000000_000019", "bonn/bonn_000001_000019"]
    assert sorted(np.unique(dataset[1].label).tolist()) == [0, 18, 255]


# ---- COCO instances -> COCO-Object ----------------------------------------------------------

def encode_rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string (pycocotools' rleToString), to check the decoder against."""
    chars = []
    for i, value in enumerate(counts):
        if i > 2:
            value -= counts[i - 2]
        more = True
        while more:
            char = value & 0x1F
            value >>= 5
            more = value != -1 if char & 0x10 else value != 0
            chars.append(chr((char | 0x20 if more else char) + 48))
    return "".join(chars)


def test_rle_decoding_both_encodings():
    mask = np.zeros((7, 5), dtype=bool)
    mask[1:4, 2:5] = True
    mask[6, 0] = True
    runs, current, count = [], False, 0
    for value in mask.T.ravel():
        if value != current:
            runs.append(count)
            current, count = value, 0
        count += 1
    runs.append(count)
    np.testing.assert_array_equal(decode_rle({"size": [7, 5], "counts": runs}), mask)
    encoded = encode_rle_string(runs)
    assert rle_counts_from_string(encoded) == runs
    np.testing.assert_array_equal(decode_rle({"size": [7, 5], "counts": encoded}), mask)
    big = [0, 1000, 3, 70000, 1, 2]
    assert rle_counts_from_string(encode_rle_string(big)) == big


def test_polygon_mask_covers_the_box_pixels():
    mask = polygon_mask([[2, 1, 6, 1, 6, 4, 2, 4]], 8, 8)  # x in [2, 6], y in [1, 4] in pixel-edge coordinates
    assert mask.sum() == 4 * 3 and mask[1:4, 2:6].all()


def test_coco_object_label_paints_large_objects_first():
    big = {"segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]], "area": 100, "category_id": 1}
    small = {"segmentation": [[2, 2, 4, 2, 4, 4, 2, 4]], "area": 4, "category_id": 2}
    label = coco_object_label(10, 10, [small, big])
    assert label[3, 3] == 2 and label[8, 8] == 1 and label.dtype == np.uint8


def test_coco_instances_layout(tmp_path):
    write_image(tmp_path / "val2017" / "000000000009.jpg", 10, 12)
    write_image(tmp_path / "val2017" / "000000000004.jpg", 6, 6)
    write_image(tmp_path / "val2017" / "000000000077.jpg", 6, 6)  # not in the json: not evaluated
    crowd = np.zeros((10, 12), dtype=bool)
    crowd[5:, 8:] = True
    runs = [int(r) for r in np.diff(np.flatnonzero(np.diff(np.concatenate([[-1], crowd.T.ravel().astype(int), [-1]]))))]
    instances = {
        "images": [{"id": 9, "file_name": "000000000009.jpg", "height": 10, "width": 12},
                   {"id": 4, "file_name": "000000000004.jpg", "height": 6, "width": 6}],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"image_id": 9, "category_id": 3, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]], "area": 16, "iscrowd": 0},
            {"image_id": 9, "category_id": 90, "segmentation": {"size": [10, 12], "counts": runs}, "area": 20,
             "iscrowd": 1},
            {"image_id": 9, "category_id": 1, "segmentation": {"size": [10, 12], "counts": encode_rle_string(runs)},
             "area": 20, "iscrowd": 1},
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(instances))
    dataset = open_dataset("coco_object", tmp_path)
    assert dataset.layout.name == "coco-instances"
    assert [i.name for i in dataset.items] == ["000000000004", "000000000009"]
    assert not dataset[0].label.any()
    label = dataset[1].label
    # car (id 3 -> 2) polygon; the crowd RLEs are left out, as cocostuffapi leaves them out of COCO-Stuff's things
    assert label[0, 0] == 2 and label[9, 11] == 0 and (label == 2).sum() == 16 and label.max() == 2
    # painted when asked: two equal-area crowd RLEs, the later one (person, id 1 -> 1) ends on top
    with_crowd = coco_object_label(10, 12, dataset.items[1].annotations, include_crowd=True)
    assert with_crowd[0, 0] == 2 and with_crowd[9, 11] == 1 and with_crowd[7, 2] == 0
    assert (with_crowd == 1).sum() == 20 and sorted(np.unique(with_crowd).tolist()) == [0, 1, 2]


# ---- errors ---------------------------------------------------------------------------------

def test_wrong_root_names_the_missing_folder(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DatasetError) as info:
        open_dataset("voc21", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "SegmentationClass") in message and "mmseg layout" in message and "\n" not in message
    with pytest.raises(DatasetError, match="not a folder"):
        open_dataset("ade20k", tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown dataset 'pascal'"):
        open_dataset("pascal", tmp_path)
    with pytest.raises(DatasetError, match="no layout 'weird'"):
        open_dataset("voc21", tmp_path, layout="weird")


def test_incomplete_dataset_and_size_mismatch(tmp_path):
    make_voc(tmp_path, names=("a",))
    base = tmp_path / "VOCdevkit" / "VOC2012"
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("a\nmissing\n")
    with pytest.raises(DatasetError, match="missing.jpg does not exist"):
        open_dataset("voc21", tmp_path)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("a\n")
    write_label(base / "SegmentationClass" / "a.png", np.zeros((3, 3)))
    with pytest.raises(DatasetError, match="label .* is 3x3 but image"):
        open_dataset("voc21", tmp_path)[0]
