"""Evaluation of a generator: Fréchet distances, KID and class coverage, recorded per run.

:func:`evaluate_generator` draws seeded samples from a generator and extracts their features in
each feature space. It compares them with the cached statistics of the real images
(:func:`mdgan.metrics.real_statistics`). Given the run's routing, it also compares the share of
generated images per class with the share of real images. :func:`evaluate_checkpoint` rebuilds
the generator, dataset, embedder and selector of a saved run first, and the trainer calls
:func:`evaluate_generator` every ``eval.every`` steps. :func:`append_record` adds the result to
the run's ``metrics.jsonl`` as one line ``{"step": ..., "eval": {...}, ...}``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError
from safetensors import safe_open
from torch import nn

from .build import build_embedder, build_selector, resolve_device
from .checkpoint import load_checkpoint
from .config import ConfigError, EvalConfig, TrainConfig, apply_overrides, describe_validation_error
from .data import default_cache_dir, load_dataset
from .embedders import Embedder, OpenClipEmbedder, PixelEmbedder, clip_weights_available
from .features import compute_features, load_features
from .fmnist_classifier import ARCHITECTURE, file_digest, load_fashion_classifier
from .metrics import (
    FeatureSpace,
    class_coverage,
    feature_statistics,
    format_count,
    frechet_distance,
    kid,
    metric_name,
    real_statistics,
)
from .progress import NullProgress, ProgressHook
from .sampling import load_generator
from .selectors import Selector

__all__ = [
    "FEATURE_SPACE_NAMES",
    "EvalResult",
    "Routing",
    "append_record",
    "build_feature_space",
    "evaluate_checkpoint",
    "evaluate_generator",
    "plan_evaluation",
    "run_directory",
]

logger = logging.getLogger(__name__)

FEATURE_SPACE_NAMES = ("pixels", "fmnist-classifier", "clip", "inception")
PIXEL_SIZE = 8
"""Side of the area-averaged images of the ``pixels`` feature space (64 features per channel)."""


# --------------------------------------------------------------------------------------------
# Feature spaces


def plan_evaluation(settings: EvalConfig, data_source: str) -> tuple[list[str], set[str]]:
    """Feature spaces to build and the metrics to compute in them.

    Returns the space names and a subset of ``{"fd", "kid", "coverage"}``. ``fid`` stands for
    ``fd`` in the Inception space, so it adds ``inception`` to the spaces.
    """
    spaces = list(settings.feature_spaces or (
        ["pixels", "fmnist-classifier"] if data_source == "fashion-mnist" else ["pixels"]
    ))
    metrics = set(settings.metrics)
    if "fid" in metrics:
        metrics.discard("fid")
        if "fd" not in metrics:
            spaces = []
        if "inception" not in spaces:
            spaces.append("inception")
        metrics.add("fd")
    return spaces, metrics


def build_feature_space(
    name: str, *, channels: int, config: TrainConfig, device: torch.device | str = "cpu"
) -> FeatureSpace:
    """Build one of :data:`FEATURE_SPACE_NAMES`.

    - ``pixels``: images area-averaged to 8x8, ``64 * channels`` features
      (:class:`~mdgan.embedders.PixelEmbedder` without PCA).
    - ``fmnist-classifier``: the 128 penultimate activations of the Fashion-MNIST classifier
      (weights from ``eval.classifier_weights`` or the file shipped with mdgan).
    - ``clip``: CLIP image features of ``embedder.clip_model`` with ``embedder.clip_pretrained``,
      named ``clip-<model>`` (``clip-vit-b-32``). The weights must be available locally.
    - ``inception``: the 2048 pool features of the FID Inception-v3 (``eval.inception_weights``).
    """
    device = torch.device(device)
    if name == "pixels":
        embedder = PixelEmbedder(PIXEL_SIZE, channels).to(device)
        return FeatureSpace("pixels", embedder, embedder.describe(), device)
    if name == "fmnist-classifier":
        model, path = load_fashion_classifier(config.eval.classifier_weights, device)
        description = f"{ARCHITECTURE}(penultimate 128, sha256={file_digest(path)[:16]})"
        return FeatureSpace("fmnist-classifier", model.features, description, device)
    if name == "clip":
        settings = config.embedder
        available, reason = clip_weights_available(
            settings.clip_model, settings.clip_pretrained, settings.clip_cache_dir
        )
        if not available:
            raise FileNotFoundError(
                f"the clip feature space needs local CLIP weights, but {reason}. Remove 'clip' "
                "from the feature spaces, or set embedder.clip_pretrained to a local file"
            )
        embedder = OpenClipEmbedder(
            settings.clip_model, settings.clip_pretrained, device=device,
            normalize=settings.normalize, cache_dir=settings.clip_cache_dir,
        )
        return FeatureSpace(f"clip-{settings.clip_model.lower()}", embedder, embedder.describe(), device)
    if name == "inception":
        from .inception import InceptionFeatures

        network = InceptionFeatures(config.eval.inception_weights, device)
        description = (
            "inception-v3-2015-12-05(torch-fidelity, pool 2048, tf1 bilinear resize, "
            f"sha256={file_digest(network.weights_path)[:16]})"
        )
        return FeatureSpace("inception", network, description, device)
    raise ValueError(f"unknown feature space {name!r}; choose one of {', '.join(FEATURE_SPACE_NAMES)}")


# --------------------------------------------------------------------------------------------
# Routing and results


@dataclass
class Routing:
    """A run's routing of images to classes, which class coverage measures.

    Attributes
    ----------
    embedder, selector
        The run's embedder and its selector, fitted to the class means of ``level``.
    real_labels
        int64 ``[N]``: the class of every real image under the same routing. Coverage compares
        generated shares with these, not with the partition's labels, so a generator that
        matched the data exactly would score 0 even where the partition's classes are not the
        selector's nearest-mean cells.
    class_names
        Name of each class.
    level
        The growth level whose classes are used.
    """

    embedder: Embedder
    selector: Selector
    real_labels: np.ndarray
    class_names: Sequence[str]
    level: int

    @classmethod
    def from_features(
        cls, embedder: Embedder, selector: Selector, real_features: torch.Tensor,
        class_names: Sequence[str], level: int, batch_size: int = 4096,
    ) -> Routing:
        """Route the real images' features (in the embedder's space) with the selector."""
        labels = [
            selector.select(real_features[start : start + batch_size]).cpu()
            for start in range(0, len(real_features), batch_size)
        ]
        return cls(embedder, selector, torch.cat(labels).numpy().astype(np.int64), list(class_names), level)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class EvalResult:
    """The numbers of one evaluation.

    ``metrics`` maps names such as ``fd_pixels@5k`` and ``coverage_tv@5k`` to values.
    ``feature_spaces`` maps each space's short name to its full description. ``coverage``
    contains the per-class table, or None when coverage was not computed.
    """

    step: int | None
    num_samples: int
    num_real: int
    metrics: dict[str, float]
    feature_spaces: dict[str, str]
    coverage: dict | None
    seconds: float
    checkpoint: str | None = None

    def to_record(self) -> dict:
        """Return the line written to ``metrics.jsonl``."""
        record = {
            "step": self.step,
            "eval": self.metrics,
            "feature_spaces": self.feature_spaces,
            "num_samples": self.num_samples,
            "num_real": self.num_real,
            "seconds": round(self.seconds, 3),
        }
        if self.coverage is not None:
            record["coverage"] = self.coverage
        if self.checkpoint is not None:
            record["checkpoint"] = self.checkpoint
        return record


def append_record(run_dir: str | Path, result: EvalResult) -> Path:
    """Append ``result`` to ``run_dir/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(result.to_record()) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# Evaluation


def _generated_batches(generator: nn.Module, num: int, batch_size: int, seed: int, latent_dim: int):
    noise = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    for start in range(0, num, batch_size):
        latent = torch.randn(min(batch_size, num - start), latent_dim, generator=noise)
        yield generator(latent.to(device))


@torch.no_grad()
def evaluate_generator(
    generator: nn.Module,
    dataset,
    settings: EvalConfig,
    feature_spaces: Sequence[FeatureSpace],
    *,
    metrics: set[str] | None = None,
    routing: Routing | None = None,
    latent_dim: int | None = None,
    cache_dir: str | Path | None = None,
    step: int | None = None,
    progress: ProgressHook | None = None,
) -> EvalResult:
    """Evaluate ``generator`` against the real images of ``dataset``.

    Parameters
    ----------
    generator
        Maps ``[B, latent_dim]`` noise to images in [-1, 1]; it runs in eval mode and its
        training mode is restored afterwards. The noise comes from a generator seeded with
        ``settings.seed``, so neither the global RNG nor the training noise is touched.
    dataset
        Real images (an :class:`mdgan.data.ImageArray`).
    settings
        Sample count, batch size, seeds, KID subsets and coverage thresholds.
    feature_spaces
        Spaces of the Fréchet distance and KID.
    metrics
        Subset of ``{"fd", "kid", "coverage"}``; the default is ``settings.metrics`` without
        ``fid`` (see :func:`plan_evaluation`).
    routing
        The run's routing, required for ``coverage``; with one class, coverage is skipped.
    latent_dim
        Noise length; the default is ``generator.latent_dim``.
    cache_dir
        Folder of the real-statistics cache; None computes them without caching.
    """
    started = time.perf_counter()
    progress = progress or NullProgress()
    metrics = set(metrics if metrics is not None else plan_evaluation(settings, "")[1])
    unknown = metrics - {"fd", "kid", "coverage"}
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from fd, kid and coverage")
    if metrics & {"fd", "kid"} and not feature_spaces:
        raise ValueError("fd and kid need at least one feature space")
    names = [space.name for space in feature_spaces]
    if len(set(names)) != len(names):
        raise ValueError(f"feature space names must be unique, got {names}")
    latent_dim = latent_dim or getattr(generator, "latent_dim", None)
    if latent_dim is None:
        raise ValueError("the generator has no latent_dim attribute; pass latent_dim")
    num = settings.num_samples

    coverage_wanted = "coverage" in metrics
    if coverage_wanted and routing is None:
        raise ValueError("coverage needs the run's routing (embedder, selector and real labels)")
    if coverage_wanted and routing.num_classes < 2:
        logger.info("coverage skipped: growth level %d has one class", routing.level)
        coverage_wanted = False
    spaces = feature_spaces if metrics & {"fd", "kid"} else []

    # Real side, read from the cache when nothing changed.
    per_class_fd = coverage_wanted and "fd" in metrics
    real = {
        space.name: real_statistics(
            dataset, space, num_real=settings.num_real, seed=settings.seed,
            batch_size=settings.batch_size, cache_dir=cache_dir,
            labels=routing.real_labels if per_class_fd else None,
            num_classes=routing.num_classes if per_class_fd else None,
            progress=progress,
        )
        for space in spaces
    }

    generated, generated_labels = _generated_features(
        generator, spaces, routing if coverage_wanted else None, settings, latent_dim, progress
    )
    results = _distances(spaces, generated, real, metrics, settings)

    coverage = None
    if coverage_wanted:
        coverage = _coverage(routing, generated_labels, generated, real, spaces, settings, per_class_fd)
        count = format_count(num)
        results[f"coverage_tv@{count}"] = coverage.pop("total_variation")
        results[f"coverage_kl@{count}"] = coverage.pop("kl_divergence")
        results[f"coverage_dropped@{count}"] = float(len(coverage["dropped"]))

    num_real = next(iter(real.values())).count if real else len(dataset)
    return EvalResult(
        step=step,
        num_samples=num,
        num_real=num_real,
        metrics=results,
        feature_spaces={space.name: space.description for space in spaces},
        coverage=coverage,
        seconds=time.perf_counter() - started,
    )


def _generated_features(generator, spaces, routing, settings, latent_dim, progress):
    """Generate ``settings.num_samples`` images and return their float64 features per space and,
    with a routing, their classes."""
    features: dict[str, list[torch.Tensor]] = {space.name: [] for space in spaces}
    classes: list[torch.Tensor] = []
    was_training = generator.training
    generator.eval()
    progress.start("generate", settings.num_samples, "generate and extract features")
    try:
        batches = _generated_batches(
            generator, settings.num_samples, settings.batch_size, settings.seed, latent_dim
        )
        for images in batches:
            for space in spaces:
                features[space.name].append(space.extract(images))
            if routing is not None:
                routed = routing.embedder.embed_images(images.to(routing.embedder.device))
                classes.append(routing.selector.select(routed).cpu())
            progress.advance("generate", len(images))
    finally:
        generator.train(was_training)
        progress.stop("generate")
    generated = {name: torch.cat(chunks).double().numpy() for name, chunks in features.items()}
    return generated, torch.cat(classes).numpy() if classes else None


def _distances(spaces, generated, real, metrics, settings) -> dict[str, float]:
    """Fréchet distances and KIDs of the generated features against the real statistics."""
    num = settings.num_samples
    results: dict[str, float] = {}
    for space in spaces:
        fake = generated[space.name]
        statistics = real[space.name]
        if "fd" in metrics:
            mean, covariance = feature_statistics(fake)
            results[metric_name("fd", space.name, num)] = frechet_distance(
                statistics.mean, statistics.covariance, mean, covariance
            )
        if "kid" in metrics:
            value, spread = kid(
                statistics.kid_features, fake, settings.kid_subsets, settings.kid_subset_size, settings.seed
            )
            results[metric_name("kid", space.name, num)] = value
            results[metric_name("kid", space.name, num) + "_std"] = spread
    return results


def _coverage(routing, generated_labels, generated, real, spaces, settings, per_class_fd) -> dict:
    num_classes = routing.num_classes
    real_counts = np.bincount(routing.real_labels, minlength=num_classes)
    generated_counts = np.bincount(generated_labels, minlength=num_classes)
    result = class_coverage(real_counts, generated_counts, settings.dropped_share_ratio)
    dropped = set(result.dropped)
    rows = []
    for k in range(num_classes):
        row = {
            "class": k,
            "name": routing.class_names[k],
            "real_count": int(real_counts[k]),
            "real_share": float(result.real_shares[k]),
            "generated_count": int(generated_counts[k]),
            "generated_share": float(result.generated_shares[k]),
            "dropped": k in dropped,
        }
        if per_class_fd:
            row["fd"] = _class_distances(k, generated_labels, generated, real, spaces, settings)
        rows.append(row)
    if dropped:
        logger.warning(
            "dropped modes: class(es) %s received under %.0f%% of their share of real images",
            ", ".join(f"{k} ({routing.class_names[k]})" for k in sorted(dropped)),
            100 * settings.dropped_share_ratio,
        )
    return {
        "level": routing.level,
        "router": routing.embedder.describe(),
        "dropped_share_ratio": settings.dropped_share_ratio,
        "dropped": sorted(dropped),
        "classes": rows,
        "total_variation": result.total_variation,
        "kl_divergence": result.kl_divergence,
    }


def _class_distances(k, generated_labels, generated, real, spaces, settings) -> dict[str, float | None]:
    """Fréchet distance of class ``k`` in each space, named with the class's generated count;
    None where the class has fewer than ``min_class_samples`` generated or real images."""
    count = int((generated_labels == k).sum())
    distances: dict[str, float | None] = {}
    for space in spaces:
        classes = real[space.name].classes
        name = metric_name("fd", space.name, count)
        if count < settings.min_class_samples or classes.counts[k] < settings.min_class_samples:
            distances[name] = None
            continue
        mean, covariance = feature_statistics(generated[space.name][generated_labels == k])
        distances[name] = frechet_distance(classes.means[k], classes.covariances[k], mean, covariance)
    return distances


# --------------------------------------------------------------------------------------------
# Saved runs


def run_directory(path: str | Path) -> Path:
    """Return the run directory of a run directory, its ``checkpoints`` folder or a checkpoint file."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    return path.parent if path.name == "checkpoints" else path


def _run_features(run_dir: Path, dataset, embedder: Embedder, config: TrainConfig, progress) -> torch.Tensor:
    """Features of the real images in the run's embedder space: the run's own
    ``partition/features.safetensors`` when it matches, else computed through the feature cache."""
    saved = run_dir / "partition" / "features.safetensors"
    if saved.is_file():
        with safe_open(str(saved), framework="pt") as handle:
            described = (handle.metadata() or {}).get("embedder")
        features = load_features(saved)
        if described == embedder.describe() and len(features) == len(dataset):
            return features
        logger.info("ignoring %s: it contains other features or another number of images", saved)
    return compute_features(
        dataset, embedder, config.embedder.batch_size,
        cache_dir=(config.data.cache_dir or default_cache_dir()) / "features", progress=progress,
    )


def evaluate_checkpoint(
    path: str | Path,
    overrides: Sequence[str] = (),
    device: str = "auto",
    progress: ProgressHook | None = None,
) -> EvalResult:
    """Evaluate the generator of a checkpoint (a file or the latest in a run directory).

    The run's configuration comes from the checkpoint; ``overrides`` (dotted ``KEY=VALUE``)
    change it first, e.g. ``eval.num_samples=10000`` or ``data.path=/data/moved``. The
    generator, the dataset, the embedder (with its fitted state) and the selector of the
    checkpoint's growth level are rebuilt, and the run's embedder must describe the same
    feature space as at training time.
    """
    progress = progress or NullProgress()
    target = resolve_device(device)
    generator, metadata = load_generator(path, device)
    tensors, _ = load_checkpoint(metadata["path"], device="cpu")
    try:
        config = TrainConfig.model_validate(apply_overrides(metadata["config"], list(overrides)))
    except ValidationError as error:
        raise ConfigError(f"invalid evaluation settings: {describe_validation_error(error)}") from error
    settings = config.eval

    dataset = load_dataset(config.data)
    if len(dataset) != metadata["num_images"] or dataset.channels != metadata["channels"]:
        raise ValueError(
            f"the checkpoint was trained on {metadata['num_images']} images with "
            f"{metadata['channels']} channel(s), but the data settings now give {len(dataset)} with "
            f"{dataset.channels}; fix data.path or data.max_images with --set"
        )
    spaces, metrics = plan_evaluation(settings, config.data.source)
    feature_spaces = [
        build_feature_space(name, channels=dataset.channels, config=config, device=target) for name in spaces
    ]

    routing = None
    level = metadata["level"]
    if "coverage" in metrics:
        embedder, _ = build_embedder(config.embedder, dataset.channels, target)
        if embedder.describe() != metadata["embedder"]:
            raise ValueError(
                f"the run routed images with {metadata['embedder']}, but the embedder settings now "
                f"build {embedder.describe()}; make the same embedder available (for CLIP, "
                "--set embedder.clip_pretrained=PATH) or leave out --metric coverage"
            )
        fitted = {k[len("embedder."):]: v.to(target) for k, v in tensors.items() if k.startswith("embedder.")}
        if fitted:
            embedder.load_fitted_state_dict(fitted)
        embedder = embedder.eval()
        class_means = tensors[f"class_means.{level}"].to(target)
        selector = build_selector(config.selector.kind, target).fit(class_means)
        run_features = _run_features(run_directory(metadata["path"]), dataset, embedder, config, progress)
        routing = Routing.from_features(
            embedder, selector, run_features.to(target), metadata["class_names"][level], level
        )

    result = evaluate_generator(
        generator, dataset, settings, feature_spaces, metrics=metrics, routing=routing,
        latent_dim=metadata["latent_dim"], cache_dir=config.data.cache_dir or default_cache_dir(),
        step=metadata["step"], progress=progress,
    )
    result.checkpoint = metadata["path"]
    return result
