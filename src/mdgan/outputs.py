"""Files of a partition directory: features, partition, class sizes and preview grids."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from .checkpoint import save_safetensors
from .features import save_features
from .grids import save_partition_previews
from .partitioners import Partition

__all__ = ["partition_summary", "read_partition", "write_partition"]


def partition_summary(partition: Partition) -> list[dict]:
    """Name, size and parent of every class at every level, as JSON-ready records."""
    return [
        {
            "level": level,
            "classes": [
                {"name": name, "size": int(size), "parent": int(parent)}
                for name, size, parent in zip(
                    partition.class_names[level],
                    partition.class_sizes(level),
                    partition.parents[level],
                )
            ],
        }
        for level in range(partition.num_levels)
    ]


def write_partition(
    directory: str | Path,
    partition: Partition,
    features: torch.Tensor,
    dataset,
    embedder_description: str,
    embedder_reason: str = "",
    per_class: int = 16,
    seed: int = 0,
) -> Path:
    """Write ``features.safetensors``, ``partition.safetensors``, ``partition.json``,
    ``skipped.json`` (when the dataset skipped files) and preview grids to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_features(directory / "features.safetensors", features, {"embedder": embedder_description})
    save_safetensors(partition.to_tensors(), directory / "partition.safetensors")
    summary = {
        "embedder": embedder_description,
        "embedder_reason": embedder_reason,
        "num_images": partition.num_images,
        "levels": partition_summary(partition),
    }
    (directory / "partition.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    skipped = getattr(dataset, "skipped", [])
    if skipped:
        records = [{"path": path, "reason": reason} for path, reason in skipped]
        (directory / "skipped.json").write_text(json.dumps(records, indent=2), encoding="utf-8")
    save_partition_previews(dataset.batch, partition, directory, per_class=per_class, seed=seed)
    return directory


def read_partition(directory: str | Path) -> Partition:
    """Read the partition written by :func:`write_partition`."""
    directory = Path(directory)
    tensor_path = directory / "partition.safetensors"
    if not tensor_path.is_file():
        raise FileNotFoundError(
            f"partition not found: {tensor_path}; create it with 'mdgan partition --out {directory}'"
        )
    names = []
    summary_path = directory / "partition.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        names = [[c["name"] for c in level["classes"]] for level in summary["levels"]]
    return Partition.from_tensors(load_file(str(tensor_path)), names)
