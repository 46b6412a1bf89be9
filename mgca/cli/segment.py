"""`mgca-segment`: segment one image with a free-form vocabulary and write a colour overlay with a legend.

    mgca-segment photo.jpg --classes "cat,grass,sky" --checkpoint runs/mgca/last.pt [--out overlay.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .eval import add_inference_args, add_model_args, apply_protocol, build_predictor, run_main


def parse_classes(text: str) -> list[str]:
    """'cat, grass ,sky' -> ['cat', 'grass', 'sky']; duplicates and empties are an error, not a guess."""
    names = [name.strip() for name in text.split(",")]
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        from mgca.config import ConfigError

        raise ConfigError(f"--classes must be distinct, comma-separated names like 'cat,grass,sky', got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgca-segment",
                                     description="Open-vocabulary segmentation of one image (MGCA).")
    parser.add_argument("image", help="input image (any format Pillow reads)")
    parser.add_argument("--classes", required=True, help="comma-separated class names, e.g. 'cat,grass,sky'")
    parser.add_argument("--out", help="overlay PNG to write (default: ./<image name>_segmented.png)")
    parser.add_argument("--labels-out", help="also write the raw label map as a PNG of class indices")
    add_model_args(parser)
    add_inference_args(parser)
    return parser


def run(args: argparse.Namespace) -> Path:
    from PIL import Image

    from mgca.visualize import legend_entries, save_overlay
    from runtime.files import check_writable_file
    from runtime.image_files import read_rgb

    names = parse_classes(args.classes)
    image = read_rgb(args.image)  # upright by its EXIF orientation: labels match the photo as it is shown
    out = Path(args.out) if args.out else Path(f"{Path(args.image).stem}_segmented.png")
    check_writable_file(out, "--out", inputs=(args.image,))  # before the model loads; never over the photo
    if args.labels_out:
        check_writable_file(args.labels_out, "--labels-out", inputs=(args.image, out))
    predictor, _ = build_predictor(apply_protocol(args), args.background_threshold)
    predictor.set_classes(names)
    labels = predictor.predict(image)
    with_background = args.background_threshold is not None
    shown = ["background"] + names if with_background else names
    save_overlay(out, image, labels, shown, background_index=0 if with_background else None)
    if args.labels_out:
        Path(args.labels_out).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels.astype(np.uint8 if len(shown) < 256 else np.uint16)).save(args.labels_out)
    shares = ", ".join(f"{shown[k]} {100 * share:.1f}%" for k, share in legend_entries(labels, shown) if share > 0)
    print(f"{out}: {image.shape[1]}x{image.shape[0]}, {shares}")
    return out


def main(argv: list[str] | None = None) -> int:
    return run_main("mgca-segment", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
