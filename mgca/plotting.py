"""Training pictures: the loss curve PNG people look at after a run."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def plot_loss_curve(history: Sequence[dict[str, float]], path: str | Path, terms: Sequence[str] = ("loss", "obj", "reg", "pix")) -> Path:
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
