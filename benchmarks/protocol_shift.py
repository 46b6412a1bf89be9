"""What each evaluation-protocol choice moves: mIoU and label agreement of protocol variants on labelled sets.

    python benchmarks/protocol_shift.py --checkpoint last.pt                       # the sample sets in ../shared/data
    python benchmarks/protocol_shift.py --decoder none --arch ViT-B-16 --clip-weights ViT-B-16.pt \\
        --set voc21=/data/VOCdevkit/VOC2012 --set context60=/data/VOCdevkit/VOC2010

Every variant runs the same model on the same images through `mgca-eval`'s own predict callable; "before"
is mgca's protocol before issue 20 (softmax background, image padded to the output stride first, no
long-side cap, TCL's templates averaged CLIP's way), "default" today's (docs/inference-contract.md, "Evaluation
protocol"), and each other variant turns one of today's choices back (or picks another rule). The agreement column
is the share of pixels whose label equals the default's. With a random-init or synthetic-trained CLIP the numbers
measure the pipeline (how many pixels a choice moves), not segmentation quality.
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgca import prompts
from mgca.cli import eval as eval_cli
from mgca.evalsets import open_dataset
from runtime.metrics import ConfusionMatrix

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLE_SETS = {"voc21": SHARED / "voc_sample", "ade20k": SHARED / "ade_sample", "cityscapes": SHARED / "cityscapes_1",
               "coco_object": SHARED / "coco_mini"}
BEFORE = {"bg_rule": "softmax", "padding": "image", "long_side": 0, "template_average": "normalized"}
VARIANTS = {
    "before": BEFORE,
    "default": {},
    "bg softmax": {"bg_rule": "softmax"},
    "bg tcl": {"bg_rule": "tcl"},
    "padding image": {"padding": "image"},
    "templates CLIP-averaged": {"template_average": "normalized"},
    "PAMR 10": {"pamr": 10},
}


@contextmanager
def template_average(value: str | None):
    """TCL's set averaged another way for one variant (the setting is the template set's, not a flag)."""
    saved = dict(prompts.TEMPLATE_AVERAGE)
    if value is not None:
        prompts.TEMPLATE_AVERAGE["tcl"] = value
    try:
        yield
    finally:
        prompts.TEMPLATE_AVERAGE.clear()
        prompts.TEMPLATE_AVERAGE.update(saved)


def run_variant(base: list[str], name: str, root: Path, overrides: dict, limit: int | None):
    args = eval_cli.build_parser().parse_args(["--dataset", name, "--root", str(root), "--no-progress", *base])
    for key, value in overrides.items():
        if key != "template_average":
            setattr(args, key, value)
    dataset = open_dataset(name, root)
    eval_cli.apply_protocol(args, dataset.spec.protocol)
    with template_average(overrides.get("template_average")):
        predict, info = eval_cli.make_predict_fn(args, dataset.spec)
    matrix = ConfusionMatrix(dataset.spec.num_classes, dataset.spec.ignore_index)
    labels = []
    for index in range(len(dataset) if limit is None else min(limit, len(dataset))):
        sample = dataset[index]
        predicted = np.asarray(predict(sample.image))
        matrix.update(predicted, sample.label)
        labels.append(predicted)
    return matrix.compute(dataset.spec.classes), labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--decoder", default="checkpoint", choices=["checkpoint", "none"])
    parser.add_argument("--arch", default="mgca-tiny")
    parser.add_argument("--clip-weights")
    parser.add_argument("--set", action="append", default=[], metavar="DATASET=ROOT",
                        help="labelled set(s) to use (default: the sample sets in ../shared/data)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    parser.add_argument("--limit", type=int, help="at most this many images per set")
    parser.add_argument("--json", help="also write the table as JSON")
    args = parser.parse_args(argv)
    sets = dict(s.split("=", 1) for s in args.set) if args.set else {k: str(v) for k, v in SAMPLE_SETS.items()}
    base = ["--decoder", args.decoder, "--arch", args.arch, "--device", "cpu"]
    base += ["--checkpoint", args.checkpoint] if args.checkpoint else []
    base += ["--clip-weights", args.clip_weights] if args.clip_weights else []
    variants = args.variants.split(",")
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name, root in sets.items():
        results = {v: run_variant(base, name, Path(root), VARIANTS[v], args.limit) for v in variants}
        reference = results.get("default", next(iter(results.values())))[1]
        table[name] = {}
        for variant, (metrics, labels) in results.items():
            same = sum(int((a == b).sum()) for a, b in zip(labels, reference, strict=True))
            total = sum(a.size for a in labels)
            table[name][variant] = {"mIoU": 100 * metrics.miou, "agreement_with_default": same / total,
                                    "images": metrics.num_images}
    print("| set (images) | " + " | ".join(variants) + " |")
    print("|---" * (len(variants) + 1) + "|")
    for name, row in table.items():
        images = next(iter(row.values()))["images"]
        cells = [f"{row[v]['mIoU']:.2f} ({100 * row[v]['agreement_with_default']:.1f}%)" for v in variants]
        print(f"| {name} ({images}) | " + " | ".join(cells) + " |")
    print("cells: mIoU % (share of pixels labelled as by the default protocol)")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
