"""Training pictures: the loss curve PNG people look at after a run."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_loss_curve(history: Sequence[dict[str, float]], path: str | Path,
                    terms: Sequence[str] = ("loss", "obj", "reg", "pix")) -> Path:
    """Plot each loss term against the optimizer step (total bold), and the learning rate beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    steps = [h["step"] for h in history]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for term in terms:
        if history and term in history[0]:
            ax_loss.plot(steps, [h[term] for h in history], label="total" if term == "loss" else f"L_{term}",
                         linewidth=2.2 if term == "loss" else 1.2)
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("MGCA training loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    if history and "lr" in history[0]:
        ax_lr.plot(steps, [h["lr"] for h in history], color="tab:gray")
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_segmentation_grid(rows: Sequence[Sequence], columns: Sequence[str], class_names: Sequence[str],
                           path: str | Path, ignore_index: int = 255) -> Path:
    """A grid of images and label maps: one row per image, e.g. image | ground truth | baseline | ours.

    The first cell of a row is an RGB image; the others are (H, W) label maps drawn over it in the
    same colours as `runtime.overlay` (`ignore_index` pixels left uncoloured), with one legend for the grid.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from runtime.overlay import blend, class_palette

    path = Path(path)
    palette = class_palette(len(class_names))
    shown = sorted({int(k) for row in rows for cell in row[1:] for k in np.unique(cell)} & set(range(len(class_names))))
    legend_height = 0.3 + 0.2 * -(-len(shown) // 4)  # inches: four legend entries a line
    height = 2.4 * len(rows) + 0.3 + legend_height
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.4 * len(columns), height), squeeze=False)
    for r, row in enumerate(rows):
        image = row[0]
        for c, cell in enumerate(row):
            ax = axes[r][c]
            ax.imshow(image if c == 0 else blend(image, cell, palette, 0.7, ignore_index), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
    handles = [Patch(color=tuple(palette[k] / 255), label=class_names[k]) for k in shown]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_height / height, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
