"""`mgca-weights`: fetch real CLIP weights once, with open_clip's own pretrained download, into a local file.

    mgca-weights ViT-B-16 --pretrained openai --out weights/     # writes weights/ViT-B-16.pt, prints its sha256

The only mgca command that downloads; everything else loads the local file it writes (`--weights FILE`).
"""
from __future__ import annotations

import argparse
import sys

from runtime.errors import run_cli

PROG = "mgca-weights"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Download CLIP weights once with open_clip's pretrained "
                                     "download and write them to a local file (the only mgca command that "
                                     "downloads).")
    parser.add_argument("arch", help="open_clip architecture, e.g. ViT-B-16")
    parser.add_argument("--pretrained", default="openai",
                        help="open_clip pretrained tag (default openai; `python -c \"import open_clip; "
                        "print(open_clip.list_pretrained())\"` lists them)")
    parser.add_argument("--out", default="weights", help="folder to write ARCH.pt into (default weights/)")
    parser.add_argument("--cache-dir", help="open_clip/Hugging Face download cache (default: HF_HOME's)")
    parser.add_argument("--overwrite", action="store_true", help="replace a file already written there")
    return parser


def run(args: argparse.Namespace) -> None:
    from mgca.weights import fetch_pretrained

    fetched = fetch_pretrained(args.arch, args.pretrained, args.out, args.cache_dir, args.overwrite)
    print(f"{PROG}: {fetched.describe()}")
    print(f"{PROG}: next, a training-free bundle of your classes: mgca-export --clip {fetched.arch} --weights "
          f"{fetched.path} --no-decoder --vocab classes.txt --out bundle/")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
