"""How much the COCO-Object label maps depend on the rasterisation choices, on COCO val images (instances JSON).

    python benchmarks/coco_object_labels.py --root ../shared/data/coco_mini     # the 79-image sample, ~1 min

TCL and GroupViT score COCO-Object on maps converted from COCO-Stuff 164k's `stuffthingmaps` PNGs (things
1..80, stuff and unlabelled -> 0). Those maps are not on this machine, so mgca's fallback rasterises the
instances JSON (`mgca.evalsets.coco`). This script measures how far apart the plausible recipes are: crowd
annotations in or out, largest objects painted first or JSON order, pixel-centre polygons (mgca) or
pycocotools' `annToMask` (what cocostuffapi's `cocoSegmentationToSegmentationMap` calls; optional: measured only
when pycocotools is installed, which mgca does not need). Each variant is compared with mgca's default map:
share of identical pixels over all pixels and over pixels that are an object in either map.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgca.evalsets import open_dataset
from mgca.evalsets.coco import annotation_mask, coco_object_label


def paint(height: int, width: int, annotations, *, crowd: bool, largest_first: bool, masks) -> np.ndarray:
    label = np.zeros((height, width), dtype=np.uint8)
    chosen = [a for a in annotations if crowd or not a.get("iscrowd", 0)]
    if largest_first:
        chosen = sorted(chosen, key=lambda a: -float(a.get("area", 0.0)))
    for ann in chosen:
        label[masks(ann, height, width)] = int(ann["category_id"])
    return label


def centre_masks(ann, height, width):
    return annotation_mask(ann["segmentation"], height, width)


def pycocotools_masks():
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        return None

    def masks(ann, height, width):
        segmentation = ann["segmentation"]
        if isinstance(segmentation, list):
            rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation["counts"], list):
            rle = coco_mask.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        return coco_mask.decode(rle).astype(bool)

    return masks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_mini"))
    parser.add_argument("--json", help="also write the table as JSON")
    args = parser.parse_args(argv)
    dataset = open_dataset("coco_object", args.root, layout="coco-instances")
    coco = pycocotools_masks()
    variants = {
        "crowd annotations painted (mgca before issue 20)": dict(crowd=True, largest_first=True, masks=centre_masks),
        "JSON order instead of largest first": dict(crowd=False, largest_first=False, masks=centre_masks),
    }
    if coco is not None:
        variants["pycocotools annToMask polygons"] = dict(crowd=False, largest_first=True, masks=coco)
        variants["pycocotools, crowd kept"] = dict(crowd=True, largest_first=True, masks=coco)
    same = {name: [0, 0] for name in variants}
    objects = {name: [0, 0] for name in variants}
    crowd_images = 0
    for item in tqdm(dataset.items, desc="images", file=sys.stderr):
        from PIL import Image

        with Image.open(item.image_path) as handle:
            width, height = handle.size
        reference = coco_object_label(height, width, item.annotations)
        crowd_images += any(a.get("iscrowd", 0) for a in item.annotations)
        for name, options in variants.items():
            other = paint(height, width, item.annotations, **options)
            same[name][0] += int((other == reference).sum())
            same[name][1] += other.size
            either = (other > 0) | (reference > 0)
            objects[name][0] += int((other == reference)[either].sum())
            objects[name][1] += int(either.sum())
    rows = {name: {"pixels_identical": same[name][0] / same[name][1],
                   "object_pixels_identical": objects[name][0] / max(objects[name][1], 1)} for name in variants}
    print(f"COCO-Object maps of {len(dataset)} images ({crowd_images} with crowd annotations) from {args.root}, "
          "each variant against mgca's default (pixel-centre polygons, crowd annotations left out, largest first):")
    print("| variant | pixels identical | object pixels identical |\n|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {100 * row['pixels_identical']:.3f}% | {100 * row['object_pixels_identical']:.3f}% |")
    if coco is None:
        print("(pycocotools is not installed: its rasterisation was not measured)")
    if args.json:
        Path(args.json).write_text(json.dumps({"images": len(dataset), "crowd_images": crowd_images,
                                               "variants": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
