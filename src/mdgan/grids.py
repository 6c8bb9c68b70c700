"""Image grids: sample sheets and per-class previews of a partition."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid, save_image

from .partitioners import Partition

__all__ = ["save_grid", "save_partition_previews"]


def save_grid(images: torch.Tensor, path: str | Path, num_columns: int = 8) -> Path:
    """Save images ``[N, C, H, W]`` in [-1, 1] as one PNG grid with ``num_columns`` per row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
    save_image(images, str(path), nrow=num_columns, padding=2, pad_value=1.0)
    return path


def save_partition_previews(
    load_batch: Callable[[np.ndarray], torch.Tensor],
    partition: Partition,
    directory: str | Path,
    per_class: int = 16,
    seed: int = 0,
) -> list[Path]:
    """Write real images of every class at every level.

    For each level ``l`` this writes ``level_l.png`` (one row per class, ``per_class`` images a
    row, classes from top to bottom) and ``level_l/class_c.png`` for each class. Images are
    drawn at random without replacement; a row of a class with fewer images is padded with
    blank tiles. ``load_batch(indices)`` returns those images as ``[B, C, H, W]`` in [-1, 1].
    """
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    written = []
    for level in range(partition.num_levels):
        rows = []
        for class_index in range(partition.num_classes(level)):
            members = np.flatnonzero(partition.labels[level] == class_index)
            chosen = np.sort(rng.choice(members, min(per_class, len(members)), replace=False))
            images = load_batch(chosen)
            written.append(save_grid(images, directory / f"level_{level}" / f"class_{class_index}.png"))
            if len(chosen) < per_class:
                blank = torch.ones(per_class - len(chosen), *images.shape[1:])
                images = torch.cat([images, blank])
            rows.append(images)
        unit_range = (torch.cat(rows).float().clamp(-1, 1) + 1) / 2
        grid = make_grid(unit_range, nrow=per_class, padding=2, pad_value=1.0)  # [C, H, W] in [0, 1]
        written.append(save_grid(grid.unsqueeze(0) * 2 - 1, directory / f"level_{level}.png", 1))
    return written
