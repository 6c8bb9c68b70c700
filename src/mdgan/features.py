"""Embedding a whole dataset, with a feature cache keyed by data and feature space."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .checkpoint import save_safetensors
from .embedders import Embedder, embed_dataset
from .progress import NullProgress, ProgressHook

__all__ = ["compute_features", "dataset_fingerprint", "load_features", "save_features"]

logger = logging.getLogger(__name__)


def dataset_fingerprint(images: np.ndarray) -> str:
    """Hash of the decoded uint8 images, their shape included."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def save_features(path: str | Path, features: torch.Tensor, metadata: dict[str, str]) -> Path:
    """Write features ``[N, D]`` and string metadata to a safetensors file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_safetensors({"features": features}, path, metadata)


def load_features(path: str | Path) -> torch.Tensor:
    """Read the features written by :func:`save_features`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {path}; create it with 'mdgan embed'")
    return load_file(str(path))["features"]


def _batches(dataset, batch_size: int):
    for start in range(0, len(dataset), batch_size):
        yield dataset.batch(np.arange(start, min(start + batch_size, len(dataset))))


def compute_features(
    dataset,
    embedder: Embedder,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    progress: ProgressHook | None = None,
) -> torch.Tensor:
    """Fit the embedder if it learns from data, then embed every image of ``dataset``.

    ``dataset`` needs ``images`` (uint8 ``[N, H, W, C]``), ``batch(indices)`` and ``len``.
    With ``cache_dir``, features are stored under a key made of the dataset's fingerprint and
    the embedder's description, and reused while both stay the same.
    """
    progress = progress or NullProgress()
    cache_path = None
    if cache_dir is not None:
        key = hashlib.blake2b(
            f"{dataset_fingerprint(dataset.images)}|{embedder.describe()}".encode(), digest_size=16
        ).hexdigest()
        cache_path = Path(cache_dir) / f"features-{key}.safetensors"
        if cache_path.is_file():
            cached = load_file(str(cache_path))
            logger.info("features read from cache %s", cache_path)
            fitted = {k[len("embedder."):]: v for k, v in cached.items() if k.startswith("embedder.")}
            if fitted:
                embedder.load_fitted_state_dict({k: v.to(embedder.device) for k, v in fitted.items()})
            return cached["features"]

    embedder.fit(_batches(dataset, batch_size))
    progress.start("embed", len(dataset), "embed")
    features = embed_dataset(
        embedder, _batches(dataset, batch_size), progress=lambda n: progress.advance("embed", n)
    )
    progress.stop("embed")

    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"features": features.contiguous()}
        for name, value in embedder.fitted_state_dict().items():
            tensors[f"embedder.{name}"] = value.detach().cpu().contiguous()
        save_safetensors(tensors, cache_path, {"embedder": embedder.describe()})
        logger.info("features cached at %s", cache_path)
    return features
