"""What the analysis apps share: markdown tables and PNG figures (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub markdown table; floats with 4 significant digits."""

    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def save_figure(fig, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return path


def write_text(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def image_grid(images: np.ndarray, columns: int, pad: int = 1) -> np.ndarray:
    """``(N, H, W, C)`` images in [0, 1] -> one ``(rows*(H+pad), columns*(W+pad), C)`` mosaic."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    grid = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.float32)
    for i, image in enumerate(images):
        r, k = divmod(i, columns)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = image
    return grid


def to_unit_range(images: np.ndarray, per_image: bool = True) -> np.ndarray:
    """Min-max scales images (each on its own, or all together) to [0, 1] for display."""
    images = np.asarray(images, np.float32)
    axes = tuple(range(1, images.ndim)) if per_image else None
    low = images.min(axis=axes, keepdims=True)
    high = images.max(axis=axes, keepdims=True)
    return (images - low) / np.maximum(high - low, 1e-12)


def show_image(ax, image: np.ndarray) -> None:
    """Draws an (H, W, 1|3) image in [0, 1] without axes."""
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
              vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
