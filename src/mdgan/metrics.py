"""Metrics of generated images: Fréchet distance, KID and class coverage, in any feature space.

The maths are small pure functions on float64 NumPy arrays:

- :func:`frechet_distance` between two Gaussians fitted to features (FID when the features are
  Inception-v3's),
- :func:`kid`, the kernel inception distance (KID): the unbiased MMD² with the cubic
  polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets,
- :func:`class_coverage`, which compares the share of generated images routed to each class
  with the share of real images.

A :class:`FeatureSpace` names a feature extractor (an :class:`mdgan.embedders.Embedder` or any
``nn.Module`` mapping images in [-1, 1] to ``[N, d]``). :func:`real_statistics` computes the mean
and covariance of the real features once and caches them as safetensors, keyed by the dataset's
fingerprint, its preprocessing, the feature space and the sample count. :func:`metric_name`
builds the names under which numbers are reported, such as ``fd_pixels@5k``, so numbers from
different feature spaces or sample counts are not compared by mistake.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .embedders import Embedder
from .features import dataset_fingerprint
from .progress import NullProgress, ProgressHook

__all__ = [
    "ClassCoverage",
    "ClassStatistics",
    "FeatureSpace",
    "RealStatistics",
    "StreamingMoments",
    "class_coverage",
    "feature_statistics",
    "format_count",
    "frechet_distance",
    "kid",
    "kl_divergence",
    "metric_name",
    "mmd2_unbiased",
    "polynomial_kernel",
    "real_statistics",
    "total_variation",
]

logger = logging.getLogger(__name__)

# Bump when the content or meaning of a cache file changes, so old files are no longer read.
_CACHE_FORMAT = 1
_CACHE_SUBDIR = "real-stats"
_SPACE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


def _float64(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Fréchet distance


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[d]`` and covariance ``[d, d]`` (divided by ``n - 1``) of features ``[n, d]``, in float64."""
    features = _float64(features)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be [n, d] with n >= 2, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], -1)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix; negative rounding noise counts as 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between the Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``, in float64.
    The trace of the square root is the sum of the square roots of the eigenvalues of the
    symmetric matrix ``sigma1^(1/2) sigma2 sigma1^(1/2)``, which has the same eigenvalues as
    ``sigma1 sigma2``. Unlike ``scipy.linalg.sqrtm`` of the product, this stays real and stable
    for singular covariances, as with fewer samples than dimensions.
    """
    mu1, mu2 = _float64(mu1), _float64(mu2)
    sigma1, sigma2 = _float64(sigma1), _float64(sigma2)
    dim = mu1.shape[0]
    if mu1.shape != (dim,) or mu2.shape != (dim,):
        raise ValueError(f"means must both be [d], got {mu1.shape} and {mu2.shape}")
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"covariances must both be [{dim}, {dim}], got {sigma1.shape} and {sigma2.shape}"
        )
    # Symmetrise, so rounding in the caller's covariance cannot make eigh read one triangle only.
    sigma1 = (sigma1 + sigma1.T) / 2
    sigma2 = (sigma2 + sigma2.T) / 2
    root1 = _symmetric_sqrt(sigma1)
    product = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    difference = mu1 - mu2
    distance = float(difference @ difference) + float(np.trace(sigma1) + np.trace(sigma2)) - 2.0 * trace_sqrt
    # The exact value is never negative, so a negative result is rounding error.
    return max(distance, 0.0)


class StreamingMoments:
    """Mean and covariance of features that arrive in batches, in float64.

    Batches are merged with the pairwise update of Chan, Golub and LeVeque (1979), which keeps
    the precision of a two-pass computation even when the mean is large against the spread.
    """

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.mean = np.zeros(dim, dtype=np.float64)
        self.scatter = np.zeros((dim, dim), dtype=np.float64)  # sum of centred outer products

    def update(self, features) -> None:
        features = _float64(features)
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise ValueError(f"features must be [n, {self.mean.shape[0]}], got shape {features.shape}")
        count = features.shape[0]
        if count == 0:
            return
        batch_mean = features.mean(axis=0)
        centred = features - batch_mean
        total = self.count + count
        delta = batch_mean - self.mean
        self.scatter += centred.T @ centred + np.outer(delta, delta) * (self.count * count / total)
        self.mean += delta * (count / total)
        self.count = total

    @property
    def covariance(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        return self.scatter / (self.count - 1)


# --------------------------------------------------------------------------------------------
# Kernel inception distance


def polynomial_kernel(x, y) -> np.ndarray:
    """Evaluate the cubic polynomial kernel ``(x.y / d + 1)^3`` between the rows of ``x [m, d]``
    and ``y [n, d]``."""
    x, y = _float64(x), _float64(y)
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y) -> float:
    """Unbiased estimate of the squared MMD between samples ``x [m, d]`` and ``y [n, d]``.

    ``sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
    - 2 sum_{i, j} k(x_i, y_j) / (m n)`` with :func:`polynomial_kernel`. The estimate can be
    negative when the two distributions are close.
    """
    x, y = _float64(x), _float64(y)
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be [m, d] and [n, d] with m, n >= 2, got {x.shape} and {y.shape}")
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kid(real, fake, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance in any feature space: mean and standard deviation of
    :func:`mmd2_unbiased` over ``num_subsets`` random subsets.

    Each subset draws ``min(subset_size, len(real), len(fake))`` rows of each set without
    replacement; the kernel, the estimator and the defaults are those of torchmetrics'
    ``KernelInceptionDistance`` (1.9.0). Unlike the Fréchet distance, the estimate is unbiased,
    so its expected value does not depend on the number of samples.
    """
    real, fake = _float64(real), _float64(fake)
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be at least 1, got {num_subsets}")
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError(
            f"KID needs at least 2 real and 2 generated samples, got {real.shape[0]} and {fake.shape[0]}"
        )
    rng = np.random.default_rng(seed)
    estimates = np.array([
        mmd2_unbiased(
            real[rng.choice(real.shape[0], size, replace=False)],
            fake[rng.choice(fake.shape[0], size, replace=False)],
        )
        for _ in range(num_subsets)
    ])
    spread = float(estimates.std(ddof=1)) if num_subsets > 1 else 0.0
    return float(estimates.mean()), spread


# --------------------------------------------------------------------------------------------
# Class coverage


def total_variation(p, q) -> float:
    """Total variation distance ``sum |p - q| / 2`` between two discrete distributions."""
    return float(np.abs(_float64(p) - _float64(q)).sum() / 2)


def kl_divergence(p, q) -> float:
    """``KL(p || q) = sum p log(p / q)`` in nats; terms with ``p = 0`` count as 0.

    Returns infinity when ``q`` is 0 where ``p`` is not.
    """
    p, q = _float64(p), _float64(q)
    support = p > 0
    if np.any(q[support] <= 0):
        return float("inf")
    return float((p[support] * np.log(p[support] / q[support])).sum())


@dataclass(frozen=True)
class ClassCoverage:
    """Spread of the generated images over the classes, next to that of the real images.

    Attributes
    ----------
    real_counts, generated_counts : np.ndarray
        int64 ``[K]`` images per class.
    real_shares, generated_shares : np.ndarray
        The counts divided by their totals.
    total_variation : float
        :func:`total_variation` of the two shares, between 0 and 1.
    kl_divergence : float
        ``KL(real || generated)`` in nats, with every class that received no generated image
        counted as half an image so that the value stays finite.
    dropped : tuple of int
        Dropped modes: classes with real images whose generated share is below
        ``dropped_ratio`` times their real share.
    dropped_ratio : float
        The threshold used for ``dropped``.
    """

    real_counts: np.ndarray
    generated_counts: np.ndarray
    real_shares: np.ndarray
    generated_shares: np.ndarray
    total_variation: float
    kl_divergence: float
    dropped: tuple[int, ...]
    dropped_ratio: float


def class_coverage(real_counts, generated_counts, dropped_ratio: float = 0.1) -> ClassCoverage:
    """Compare the class shares of generated images with those of real images.

    Parameters
    ----------
    real_counts, generated_counts
        Images per class, ``[K]`` each.
    dropped_ratio
        A class is a dropped mode when its generated share is below this fraction of its real
        share; 0.1 flags a class that receives less than a tenth of the images it should.
    """
    real = np.asarray(real_counts, dtype=np.int64)
    generated = np.asarray(generated_counts, dtype=np.int64)
    if real.ndim != 1 or real.shape != generated.shape:
        raise ValueError(
            f"real_counts and generated_counts must be [K] of the same length, got {real.shape} "
            f"and {generated.shape}"
        )
    if (real < 0).any() or (generated < 0).any() or real.sum() == 0 or generated.sum() == 0:
        raise ValueError(
            f"counts must be non-negative with a positive total, got real {real.tolist()} and "
            f"generated {generated.tolist()}"
        )
    if not 0 < dropped_ratio < 1:
        raise ValueError(f"dropped_ratio must lie in (0, 1), got {dropped_ratio}")
    real_shares = real / real.sum()
    generated_shares = generated / generated.sum()
    # Half an image in place of none keeps the divergence finite and leaves every other class
    # as it is, so identical shares still give exactly 0.
    smoothed = np.where(generated > 0, generated, 0.5)
    dropped = tuple(
        int(k) for k in np.flatnonzero((real > 0) & (generated_shares < dropped_ratio * real_shares))
    )
    return ClassCoverage(
        real_counts=real,
        generated_counts=generated,
        real_shares=real_shares,
        generated_shares=generated_shares,
        total_variation=total_variation(real_shares, generated_shares),
        kl_divergence=kl_divergence(real_shares, smoothed / smoothed.sum()),
        dropped=dropped,
        dropped_ratio=dropped_ratio,
    )


# --------------------------------------------------------------------------------------------
# Names


def format_count(count: int) -> str:
    """``5000`` as ``"5k"``, ``50000`` as ``"50k"``; counts that are not whole thousands stay digits."""
    return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else str(count)


def metric_name(metric: str, space: str, count: int) -> str:
    """Name of a reported number: ``metric_space@count``, e.g. ``fd_pixels@5k``.

    The Fréchet distance in the Inception-v3 space is called ``fid``, as in the literature:
    ``fid_inception@50k``.
    """
    if metric == "fd" and space == "inception":
        metric = "fid"
    return f"{metric}_{space}@{format_count(count)}"


# --------------------------------------------------------------------------------------------
# Feature spaces


def _describe_module(module: nn.Module) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{type(module).__name__}(state={digest.hexdigest()})"


@dataclass
class FeatureSpace:
    """A named feature extractor for Fréchet distances and KID.

    Parameters
    ----------
    name : str
        Short name used in metric names (``fd_<name>@5k``): lower-case letters, digits, ``.``
        and ``-``.
    extractor : callable
        Maps images ``[B, C, H, W]`` in [-1, 1] to features ``[B, d]``: an
        :class:`~mdgan.embedders.Embedder` (its ``embed_images`` is used) or any ``nn.Module``.
    description : str, optional
        Full description of the features, stored in records and in the real-statistics cache
        key. It must change whenever the features change. The default is the embedder's
        ``describe()``, or for another module its class name and a hash of its state dict.
    device : torch.device, optional
        Where images are sent; the default is the device of the module's first parameter or
        buffer, else the CPU.
    """

    name: str
    extractor: Callable[[torch.Tensor], torch.Tensor]
    description: str = ""
    device: torch.device | None = None

    def __post_init__(self) -> None:
        if not _SPACE_NAME.match(self.name):
            raise ValueError(
                f"feature space name {self.name!r} must use lower-case letters, digits, '.' and '-' "
                "only, because metric names are built as metric_space@count"
            )
        if not self.description:
            if isinstance(self.extractor, Embedder):
                self.description = self.extractor.describe()
            elif isinstance(self.extractor, nn.Module):
                self.description = _describe_module(self.extractor)
            else:
                raise ValueError(f"feature space {self.name!r} needs a description of its extractor")
        if self.device is None:
            self.device = torch.device("cpu")
            if isinstance(self.extractor, nn.Module):
                for tensor in list(self.extractor.parameters()) + list(self.extractor.buffers()):
                    self.device = tensor.device
                    break

    @torch.no_grad()
    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``[B, d]`` of images in [-1, 1], as float32 on the CPU."""
        images = images.to(self.device)
        if isinstance(self.extractor, Embedder):
            features = self.extractor.embed_images(images)
        else:
            features = self.extractor(images)
        if features.ndim != 2 or features.shape[0] != images.shape[0]:
            raise ValueError(
                f"feature space {self.name!r} returned shape {tuple(features.shape)} for "
                f"{images.shape[0]} images; expected [{images.shape[0]}, d]"
            )
        return features.float().cpu()


# --------------------------------------------------------------------------------------------
# Real statistics and their cache


@dataclass
class ClassStatistics:
    """Mean and covariance of the real features of each class (``None`` for classes with fewer
    than 2 images)."""

    counts: np.ndarray
    means: list[np.ndarray | None]
    covariances: list[np.ndarray | None]


@dataclass
class RealStatistics:
    """Statistics of the features of real images in one feature space.

    Attributes
    ----------
    mean, covariance : np.ndarray
        float64 ``[d]`` and ``[d, d]``.
    count : int
        Real images used.
    kid_features : np.ndarray
        float32 ``[m, d]``: the features of a seeded random subset of at most ``kid_size``
        of those images, the real side of KID.
    key : str
        Hash of the dataset fingerprint, preprocessing, feature space, count and subset seed.
    path : Path or None
        The cache file, when a cache directory was given.
    from_cache : bool
        Whether the statistics were read from the cache.
    classes : ClassStatistics or None
        Per-class statistics, when labels were given.
    """

    mean: np.ndarray
    covariance: np.ndarray
    count: int
    kid_features: np.ndarray
    key: str
    path: Path | None = None
    from_cache: bool = False
    classes: ClassStatistics | None = None


def _digest(values: dict) -> str:
    return hashlib.blake2b(json.dumps(values, sort_keys=True).encode(), digest_size=16).hexdigest()


def _preprocessing(dataset) -> str:
    images = dataset.images
    return (
        f"{getattr(dataset, 'name', 'images')}: uint8 {list(images.shape)} [N, H, W, C] scaled to "
        "float32 [-1, 1]"
    )


def _select_rows(total: int, num_real: int | None, seed: int) -> np.ndarray:
    if num_real is None or num_real >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, num_real, replace=False))


def _read_cache(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("key") != key:
                logger.warning("ignoring real-statistics cache %s: its key does not match", path)
                return None
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, ValueError, RuntimeError) as error:
        logger.warning("ignoring unreadable real-statistics cache %s: %s", path, error)
        return None


def _write_cache(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary), metadata=metadata)
        os.replace(temporary, path)
    except OSError as error:
        logger.warning(
            "cannot write the real-statistics cache %s, so it is computed again next time: %s", path, error
        )
        return
    logger.info("real statistics cached at %s", path)


def _labels_digest(labels: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(labels, dtype=np.int64).tobytes(), digest_size=16).hexdigest()


def real_statistics(
    dataset,
    space: FeatureSpace,
    *,
    num_real: int | None = None,
    seed: int = 0,
    kid_size: int = 10_000,
    batch_size: int = 250,
    cache_dir: str | Path | None = None,
    labels: np.ndarray | None = None,
    num_classes: int | None = None,
    progress: ProgressHook | None = None,
) -> RealStatistics:
    """Mean, covariance and KID sample of the real images' features, cached on disk.

    Parameters
    ----------
    dataset
        Real images: an :class:`mdgan.data.ImageArray` or an object with ``images`` (uint8
        ``[N, H, W, C]``), ``batch(indices)`` and ``len``.
    space
        The feature space.
    num_real, seed
        Use a random subset of ``num_real`` images drawn with ``seed``; None uses all.
    kid_size
        Real features kept for KID, a seeded random subset of the images used.
    cache_dir
        Folder of the cache. Each entry is ``real-stats/<dataset>-<space>-<key>.safetensors``,
        with the key and what it was made of in the file's metadata. The key hashes the
        dataset's fingerprint (every decoded pixel), the preprocessing, the feature space's
        description, ``num_real``, ``seed`` and ``kid_size``, so changing any of them
        computes the statistics again.
    labels, num_classes
        Class of every image of ``dataset`` (int64 ``[N]``) and the number of classes: the
        per-class statistics are then computed too, and cached under a key that adds the
        labels' hash.
    """
    progress = progress or NullProgress()
    rows = _select_rows(len(dataset), num_real, seed)
    kid_rows = np.sort(np.random.default_rng(seed + 1).permutation(rows)[:kid_size])
    key_parts = {
        "format": _CACHE_FORMAT,
        "dataset": dataset_fingerprint(dataset.images),
        "preprocessing": _preprocessing(dataset),
        "features": space.description,
        "count": int(len(rows)),
        "seed": seed,
        "kid_size": kid_size,
    }
    key = _digest(key_parts)
    class_key = None
    if labels is not None:
        if num_classes is None:
            num_classes = int(labels.max()) + 1
        class_key = _digest({"key": key, "labels": _labels_digest(labels), "classes": num_classes})

    path = class_path = None
    if cache_dir is not None:
        stem = f"{re.sub(r'[^A-Za-z0-9._-]', '_', getattr(dataset, 'name', 'images'))}-{space.name}"
        folder = Path(cache_dir) / _CACHE_SUBDIR
        path = folder / f"{stem}-{key[:16]}.safetensors"
        if class_key is not None:
            class_path = folder / f"{stem}-classes-{class_key[:16]}.safetensors"
        cached = _read_cache(path, key)
        cached_classes = _read_cache(class_path, class_key) if class_path is not None else None
        if cached is not None and (class_key is None or cached_classes is not None):
            logger.info("real statistics of %s read from cache %s", space.name, path)
            return RealStatistics(
                mean=cached["mean"].numpy(),
                covariance=cached["covariance"].numpy(),
                count=int(cached["count"]),
                kid_features=cached["kid_features"].numpy(),
                key=key,
                path=path,
                from_cache=True,
                classes=_classes_from_tensors(cached_classes) if cached_classes is not None else None,
            )

    statistics = _compute_real_statistics(
        dataset, space, rows, kid_rows, batch_size, labels, num_classes, progress
    )
    statistics.key = key
    statistics.path = path
    if path is not None:
        metadata = {name: str(value) for name, value in key_parts.items()}
        _write_cache(
            path,
            {
                "mean": torch.from_numpy(statistics.mean),
                "covariance": torch.from_numpy(statistics.covariance),
                "count": torch.tensor(statistics.count),
                "kid_features": torch.from_numpy(statistics.kid_features),
            },
            {"key": key, **metadata},
        )
        if class_path is not None:
            _write_cache(
                class_path,
                _classes_to_tensors(statistics.classes),
                {"key": class_key, "statistics_key": key, "classes": str(num_classes)},
            )
    return statistics


def _compute_real_statistics(
    dataset, space, rows, kid_rows, batch_size, labels, num_classes, progress
) -> RealStatistics:
    moments: StreamingMoments | None = None
    class_moments: list[StreamingMoments] = []
    kid_chunks = []
    progress.start(f"real-{space.name}", len(rows), f"real features ({space.name})")
    for start in range(0, len(rows), batch_size):
        indices = rows[start : start + batch_size]
        features = space.extract(dataset.batch(indices)).double().numpy()
        if moments is None:
            moments = StreamingMoments(features.shape[1])
            if labels is not None:
                class_moments = [StreamingMoments(features.shape[1]) for _ in range(num_classes)]
        moments.update(features)
        for k, class_stats in enumerate(class_moments):
            class_stats.update(features[labels[indices] == k])
        kid_chunks.append(features[np.isin(indices, kid_rows)].astype(np.float32))
        progress.advance(f"real-{space.name}", len(indices))
    progress.stop(f"real-{space.name}")

    classes = None
    if labels is not None:
        classes = ClassStatistics(
            counts=np.array([m.count for m in class_moments], dtype=np.int64),
            means=[m.mean.copy() if m.count >= 2 else None for m in class_moments],
            covariances=[m.covariance if m.count >= 2 else None for m in class_moments],
        )
    return RealStatistics(
        mean=moments.mean,
        covariance=moments.covariance,
        count=moments.count,
        kid_features=np.concatenate(kid_chunks),
        key="",
        classes=classes,
    )


def _classes_to_tensors(classes: ClassStatistics) -> dict[str, torch.Tensor]:
    tensors = {"counts": torch.from_numpy(classes.counts)}
    for k, (mean, covariance) in enumerate(zip(classes.means, classes.covariances)):
        if mean is not None:
            tensors[f"mean.{k}"] = torch.from_numpy(mean)
            tensors[f"covariance.{k}"] = torch.from_numpy(covariance)
    return tensors


def _classes_from_tensors(tensors: dict[str, torch.Tensor]) -> ClassStatistics:
    counts = tensors["counts"].numpy()
    means = [tensors[f"mean.{k}"].numpy() if f"mean.{k}" in tensors else None for k in range(len(counts))]
    covariances = [
        tensors[f"covariance.{k}"].numpy() if f"covariance.{k}" in tensors else None
        for k in range(len(counts))
    ]
    return ClassStatistics(counts=counts, means=means, covariances=covariances)
