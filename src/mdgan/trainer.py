"""The CLIP-MDGAN training loop.

1. Embed every training image (:mod:`mdgan.embedders`).
2. Split the training set into nested classes, one level per growth stage
   (:mod:`mdgan.partitioners`).
3. Route every generated image to the class with the nearest class mean (:mod:`mdgan.selectors`).
4. Train each discriminator on the real images of its class against the generated images routed
   to it, and the generator against the discriminator each of its images was routed to
   (:mod:`mdgan.discriminators`).
5. At growth milestones, split every discriminator into children that start from its
   parameters (:mod:`mdgan.growth`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from . import __version__
from .build import (
    build_bank,
    build_discriminator_factory,
    build_embedder,
    build_generator,
    build_optimizer_factory,
    build_partitioner,
    build_schedule,
    build_selector,
    resolve_device,
)
from .checkpoint import (
    CheckpointNotFoundError,
    find_latest_checkpoint,
    flatten_optimizer_state,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer_state,
)
from .config import TrainConfig
from .data import default_cache_dir, load_dataset
from .discriminators import DiscriminatorBank
from .embedders import Embedder
from .evaluation import EvalResult, Routing, append_record, build_feature_space, evaluate_generator, plan_evaluation
from .features import compute_features
from .grids import save_grid
from .growth import GrowthSchedule
from .partitioners import Partition, Partitioner
from .outputs import write_partition
from .progress import CounterProgress, NullProgress, ProgressHook
from .selectors import Selector

__all__ = ["RunDirectoryExistsError", "StepResult", "Trainer"]

logger = logging.getLogger(__name__)


class RunDirectoryExistsError(FileExistsError):
    """Raised when a new run would write into a directory that contains an earlier run."""


@dataclass
class StepResult:
    """Losses and routing counts of one training step."""

    loss_g: float
    loss_d: list[float]
    real_per_d: list[int]
    fake_per_d: list[int]


@dataclass
class _MetricWindow:
    """Running sums between two lines of metrics.jsonl."""

    steps: int = 0
    loss_g: float = 0.0
    loss_d: list[float] = field(default_factory=list)
    loss_d_steps: list[int] = field(default_factory=list)
    real_per_d: list[int] = field(default_factory=list)
    fake_per_d: list[int] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def add(self, result: StepResult) -> None:
        if not self.loss_d:
            size = len(result.loss_d)
            self.loss_d, self.loss_d_steps = [0.0] * size, [0] * size
            self.real_per_d, self.fake_per_d = [0] * size, [0] * size
        self.steps += 1
        self.loss_g += result.loss_g
        for k, loss in enumerate(result.loss_d):
            if not math.isnan(loss):
                self.loss_d[k] += loss
                self.loss_d_steps[k] += 1
            self.real_per_d[k] += result.real_per_d[k]
            self.fake_per_d[k] += result.fake_per_d[k]


class Trainer:
    """Trains one generator against a growing bank of class-specific discriminators.

    Every component can be passed in to replace the one the configuration would build, so a
    custom generator, discriminator, embedder, partitioner, selector or schedule plugs in
    without subclassing.

    Parameters
    ----------
    config : TrainConfig
        The validated run configuration; ``config.output.dir`` is the run directory.
    dataset : optional
        Training images (an :class:`mdgan.data.ImageArray` or any object with ``images``,
        ``batch(indices)``, ``__len__``, ``channels`` and ``image_size``).
    generator : nn.Module, optional
        Maps ``[B, latent_dim]`` noise to images in [-1, 1]; needs a ``latent_dim`` attribute.
    discriminator_factory : callable, optional
        Returns a new discriminator mapping images to logits ``[B]``.
    embedder, partitioner, selector, schedule : optional
        Components of the method; built from the configuration when omitted.
    progress : ProgressHook, optional
        Receives progress of decoding, embedding and training.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        dataset=None,
        generator: nn.Module | None = None,
        discriminator_factory: Callable[[], nn.Module] | None = None,
        embedder: Embedder | None = None,
        partitioner: Partitioner | None = None,
        selector: Selector | None = None,
        schedule: GrowthSchedule | None = None,
        progress: ProgressHook | None = None,
    ) -> None:
        self.config = config
        self.progress = progress or NullProgress()
        self.device = resolve_device(config.device)
        self.run_dir = Path(config.output.dir)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)

        self.dataset = dataset if dataset is not None else self._load_dataset()
        channels, image_size = self.dataset.channels, self.dataset.image_size
        self.batch_size = min(config.optim.batch_size, len(self.dataset))
        self.steps_per_epoch = max(1, len(self.dataset) // self.batch_size)
        self.total_steps = config.optim.steps or config.optim.epochs * self.steps_per_epoch

        self.embedder_reason = "passed in by the caller"
        if embedder is None:
            embedder, self.embedder_reason = build_embedder(config.embedder, channels, self.device)
        self.embedder = embedder.to(self.device).eval()
        self.partitioner = partitioner or build_partitioner(config.partition, self.embedder)
        self.selector = selector or build_selector(config.selector.kind, self.device)
        self.schedule = schedule or build_schedule(config.growth, self.steps_per_epoch)

        self.generator = (generator or build_generator(config.model, image_size, channels)).to(self.device)
        self.latent_dim = getattr(self.generator, "latent_dim", config.model.latent_dim)
        self.g_optimizer = build_optimizer_factory(config.optim, config.optim.lr_g)(
            self.generator.parameters()
        )
        self.discriminator_factory = discriminator_factory or build_discriminator_factory(
            config.model, image_size, channels
        )
        self.d_optimizer_factory = build_optimizer_factory(config.optim, config.optim.lr_d)

        self.noise = torch.Generator(self.device).manual_seed(config.seed)
        sample_noise = torch.Generator().manual_seed(config.seed + 1)
        self.fixed_noise = torch.randn(
            config.output.num_samples, self.latent_dim, generator=sample_noise
        ).to(self.device)

        self.step = 0
        self.level = 0
        self.partition: Partition | None = None
        self.class_means: list[torch.Tensor] = []
        self.bank: DiscriminatorBank | None = None
        self._labels: torch.Tensor | None = None
        self._permutation_epoch = -1
        self._permutation: torch.Tensor | None = None
        self._window = _MetricWindow()
        self._run_started = time.perf_counter()
        self._eval_spaces = None
        self._eval_real_labels: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ set-up

    def _load_dataset(self):
        report = CounterProgress(self.progress, "decode")
        dataset = load_dataset(self.config.data, progress=report)
        report.stop()
        if dataset.skipped:
            logger.warning("%d unreadable images skipped; see partition/skipped.json", len(dataset.skipped))
        return dataset

    def prepare(self) -> Partition:
        """Embed the training set, partition it and fit the selector (steps 1 to 3).

        Writes ``partition/`` in the run directory: the features, the partition, its class
        sizes and a preview grid of real images for every class and level.
        """
        self._check_run_dir_is_new()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        features = compute_features(
            self.dataset,
            self.embedder,
            self.config.embedder.batch_size,
            cache_dir=(self.config.data.cache_dir or default_cache_dir()) / "features",
            progress=self.progress,
        )
        logger.info("partitioning %d images with %s", len(features), type(self.partitioner).__name__)
        self.progress.start("partition", None, "partition")
        partition = self.partitioner.fit(features)
        self.progress.stop("partition")
        self._check_schedule_fits(partition)
        means = [partition.class_means(features, level) for level in range(partition.num_levels)]
        self._set_partition(partition, means, self.schedule.level_at(self.step))
        self._write_partition(features)
        self.bank = build_bank(
            self.config.model,
            self.config.optim,
            self.discriminator_factory,
            self.d_optimizer_factory,
            partition.num_classes(self.level),
        ).to(self.device)
        return partition

    def _check_run_dir_is_new(self) -> None:
        """Reject a run directory that already contains a run, unless overwriting is requested."""
        previous = [self.run_dir / "metrics.jsonl", self.run_dir / "checkpoints"]
        if not any(path.exists() for path in previous):
            return
        if not self.config.output.overwrite:
            raise RunDirectoryExistsError(
                f"run directory {self.run_dir} already contains a run; resume it (mdgan train --resume), "
                "replace it (output.overwrite=true, or --overwrite), or choose another output.dir"
            )
        logger.warning("replacing the run in %s (output.overwrite)", self.run_dir)
        for name in ("metrics.jsonl", "config.yaml"):
            (self.run_dir / name).unlink(missing_ok=True)
        for folder in ("checkpoints", "samples", "partition"):
            shutil.rmtree(self.run_dir / folder, ignore_errors=True)

    def _check_schedule_fits(self, partition: Partition) -> None:
        if self.schedule.max_level >= partition.num_levels:
            raise ValueError(
                f"the growth schedule reaches level {self.schedule.max_level}, but the partition has "
                f"levels 0..{partition.num_levels - 1} ({partition.num_classes(partition.num_levels - 1)} "
                "classes at the last); raise partition.num_classes or remove growth milestones"
            )

    def _set_partition(self, partition: Partition, class_means: list[torch.Tensor], level: int) -> None:
        self.partition = partition
        self.class_means = [means.to(self.device) for means in class_means]
        self._labels = torch.as_tensor(partition.labels, device=self.device)
        self.level = level
        self.selector.fit(self.class_means[level])

    def _write_config(self) -> None:
        values = self.config.model_dump(mode="json")
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")

    def _write_partition(self, features: torch.Tensor) -> None:
        write_partition(
            self.run_dir / "partition",
            self.partition,
            features,
            self.dataset,
            self.embedder.describe(),
            self.embedder_reason,
            per_class=self.config.output.preview_per_class,
            seed=self.config.seed,
        )

    # ------------------------------------------------------------------ training

    def route(self, images: torch.Tensor) -> torch.Tensor:
        """Class index of each generated image: the nearest class mean of its embedding."""
        if self.bank.num_discriminators == 1:
            return torch.zeros(images.shape[0], dtype=torch.int64, device=images.device)
        with torch.no_grad():
            features = self.embedder.embed_images(images.detach())
        return self.selector.select(features).to(images.device)

    def train_step(self, real: torch.Tensor, real_classes: torch.Tensor) -> StepResult:
        """One discriminator update and one generator update on a batch of real images."""
        latent = torch.randn(real.shape[0], self.latent_dim, device=self.device, generator=self.noise)
        fake = self.generator(latent)
        fake_classes = self.route(fake)

        self.bank.zero_grad()
        d_loss = self.bank.discriminator_loss(real, real_classes, fake.detach(), fake_classes)
        d_loss.total.backward()
        self.bank.step()

        # The discriminators only score here; their parameters need no gradient.
        self.bank.requires_grad_(False)
        self.g_optimizer.zero_grad(set_to_none=True)
        g_loss = self.bank.generator_loss(fake, fake_classes)
        g_loss.total.backward()
        self.g_optimizer.step()
        self.bank.requires_grad_(True)

        return StepResult(
            loss_g=float(g_loss.total.detach()),
            loss_d=d_loss.per_discriminator.tolist(),
            real_per_d=d_loss.real_counts.tolist(),
            fake_per_d=d_loss.fake_counts.tolist(),
        )

    def _real_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position = divmod(self.step, self.steps_per_epoch)
        if epoch != self._permutation_epoch:
            # Each epoch's order depends only on the seed and the epoch, so resuming needs no
            # saved data-loader state.
            order = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            self._permutation = torch.randperm(len(self.dataset), generator=order)
            self._permutation_epoch = epoch
        indices = self._permutation[position * self.batch_size : (position + 1) * self.batch_size]
        real = self.dataset.batch(indices.numpy()).to(self.device, non_blocking=True)
        return real, self._labels[self.level, indices.to(self.device)]

    def grow_to(self, level: int) -> None:
        """Split the discriminators level by level up to ``level`` and refit the selector."""
        self._flush_metrics()
        self.save_samples(tag="end")
        while self.level < level:
            self.level += 1
            self.bank.grow(self.partition.parents[self.level])
            logger.info(
                "step %d: growth level %d, %d discriminators",
                self.step,
                self.level,
                self.bank.num_discriminators,
            )
        self.selector.fit(self.class_means[self.level])

    def train(self, resume: bool = False) -> Path:
        """Run training to ``total_steps``; with ``resume``, continue from the latest checkpoint.

        Returns the run directory.
        """
        if resume:
            self.resume()
            if self.step >= self.total_steps:
                raise ValueError(
                    f"the run in {self.run_dir} is already at step {self.step}, and optim.steps gives "
                    f"{self.total_steps}; pass a larger --steps (optim.steps) to train further"
                )
            self._write_config()
        elif self.bank is None:
            self.prepare()
        self._run_started = time.perf_counter()
        self._window = _MetricWindow()
        output = self.config.output
        self.progress.start("train", self.total_steps, "train")
        self.progress.advance("train", self.step)

        while self.step < self.total_steps:
            level = self.schedule.level_at(self.step)
            if level > self.level:
                self.grow_to(level)
            real, real_classes = self._real_batch()
            result = self.train_step(real, real_classes)
            self._window.add(result)
            self.step += 1
            self.progress.advance(
                "train", 1, loss_g=result.loss_g, discriminators=self.bank.num_discriminators
            )
            if self.step % output.log_every == 0:
                self._flush_metrics()
            if self.step % output.sample_every == 0:
                self.save_samples()
            if self.step % output.checkpoint_every == 0:
                self.save_checkpoint()
            if self.config.eval.every and self.step % self.config.eval.every == 0:
                self.evaluate()

        self.progress.stop("train")
        self._flush_metrics()
        self.save_samples(tag="final")
        if self.step % output.checkpoint_every != 0:
            self.save_checkpoint()
        if self.config.eval.every and self.step % self.config.eval.every != 0:
            self.evaluate()
        return self.run_dir

    def evaluate(self) -> EvalResult:
        """Evaluate the generator with the ``config.eval`` settings and append the result to
        metrics.jsonl.

        Evaluation draws its noise from its own seeded generator, so training continues exactly
        as it would without it.
        """
        settings = self.config.eval
        spaces, metrics = plan_evaluation(settings, self.config.data.source)
        if self._eval_spaces is None:
            self._eval_spaces = [
                build_feature_space(name, channels=self.dataset.channels, config=self.config, device=self.device)
                for name in spaces
            ]
        routing = None
        class_names = self.partition.class_names[self.level]
        if "coverage" in metrics and len(class_names) == 1:
            metrics = metrics - {"coverage"}  # one class is always fully covered
        if "coverage" in metrics:
            labels = self._eval_real_labels.get(self.level)
            if labels is None:
                # prepare() cached these features, so this reads them back unless the cache is gone.
                features = compute_features(
                    self.dataset, self.embedder, self.config.embedder.batch_size,
                    cache_dir=(self.config.data.cache_dir or default_cache_dir()) / "features",
                )
                labels = Routing.from_features(
                    self.embedder, self.selector, features.to(self.device), class_names, self.level
                ).real_labels
                self._eval_real_labels[self.level] = labels
            routing = Routing(self.embedder, self.selector, labels, class_names, self.level)
        result = evaluate_generator(
            self.generator, self.dataset, settings, self._eval_spaces, metrics=metrics,
            routing=routing, latent_dim=self.latent_dim,
            cache_dir=self.config.data.cache_dir or default_cache_dir(), step=self.step,
            progress=self.progress,
        )
        append_record(self.run_dir, result)
        logger.info(
            "step %d evaluation: %s",
            self.step,
            "  ".join(f"{name} {value:.4g}" for name, value in result.metrics.items() if not name.endswith("_std")),
        )
        return result

    # ------------------------------------------------------------------ outputs

    def _flush_metrics(self) -> None:
        window = self._window
        if window.steps == 0:
            return
        record = {
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "level": self.level,
            "num_discriminators": self.bank.num_discriminators,
            "loss_g": window.loss_g / window.steps,
            "loss_d": [
                total / count if count else None
                for total, count in zip(window.loss_d, window.loss_d_steps)
            ],
            "real_per_d": window.real_per_d,
            "fake_per_d": window.fake_per_d,
            "steps": window.steps,
            "seconds": time.perf_counter() - window.started,
        }
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
        logger.info(
            "step %d  D=%d  loss_g %.3f  loss_d %s",
            self.step,
            record["num_discriminators"],
            record["loss_g"],
            ["-" if v is None else round(v, 3) for v in record["loss_d"]],
        )
        self._window = _MetricWindow()

    @torch.no_grad()
    def sample(self, latent: torch.Tensor | None = None) -> torch.Tensor:
        """Generate images in eval mode (batch-norm running statistics), ``[B, C, H, W]``."""
        latent = self.fixed_noise if latent is None else latent.to(self.device)
        was_training = self.generator.training
        self.generator.eval()
        images = self.generator(latent)
        self.generator.train(was_training)
        return images

    def save_samples(self, tag: str = "") -> Path:
        name = f"step_{self.step:07d}_level{self.level}" + (f"_{tag}" if tag else "") + ".png"
        columns = max(1, int(math.sqrt(self.fixed_noise.shape[0])))
        return save_grid(self.sample(), self.run_dir / "samples" / name, columns)

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Collect everything needed to resume, as named tensors plus JSON metadata."""
        tensors: dict[str, torch.Tensor] = {}
        metadata: dict = {"optimizers": {}}
        for name, value in self.generator.state_dict().items():
            tensors[f"generator.{name}"] = value
        flat, meta = flatten_optimizer_state(self.g_optimizer.state_dict(), "optimizer.generator")
        tensors.update(flat)
        metadata["optimizers"]["generator"] = meta

        for k, (discriminator, optimizer) in enumerate(zip(self.bank.discriminators, self.bank.optimizers)):
            for name, value in discriminator.state_dict().items():
                tensors[f"discriminator.{k}.{name}"] = value
            flat, meta = flatten_optimizer_state(optimizer.state_dict(), f"optimizer.discriminator.{k}")
            tensors.update(flat)
            metadata["optimizers"][f"discriminator.{k}"] = meta

        tensors.update(self.partition.to_tensors())
        for level, means in enumerate(self.class_means):
            tensors[f"class_means.{level}"] = means
        for name, value in self.embedder.fitted_state_dict().items():
            tensors[f"embedder.{name}"] = value

        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.noise"] = self.noise.get_state()
        if torch.cuda.is_available():
            for index, state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{index}"] = state
        tensors["fixed_noise"] = self.fixed_noise

        metadata.update(
            {
                "step": self.step,
                "level": self.level,
                "num_discriminators": self.bank.num_discriminators,
                "latent_dim": self.latent_dim,
                "image_size": self.dataset.image_size,
                "channels": self.dataset.channels,
                "num_images": len(self.dataset),
                "class_names": [list(names) for names in self.partition.class_names],
                "embedder": self.embedder.describe(),
                "config": self.config.model_dump(mode="json"),
                "mdgan_version": __version__,
                "torch_version": torch.__version__,
            }
        )
        return tensors, metadata

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_NNNNNNN.safetensors`` and its JSON sidecar."""
        self._flush_metrics()
        tensors, metadata = self.state_tensors()
        path = save_checkpoint(self.run_dir / "checkpoints", self.step, tensors, metadata)
        logger.info("checkpoint %s", path)
        return path

    def resume(self, path: str | Path | None = None) -> None:
        """Restore the state of the latest checkpoint in the run directory (or ``path``)."""
        source = path or self.run_dir
        try:
            find_latest_checkpoint(source)
        except CheckpointNotFoundError as error:
            raise CheckpointNotFoundError(f"cannot resume: {error}") from error
        tensors, metadata = load_checkpoint(source, device="cpu")
        if metadata["num_images"] != len(self.dataset):
            raise ValueError(
                f"the checkpoint was trained on {metadata['num_images']} images but the dataset has "
                f"{len(self.dataset)}; resume with the same data settings"
            )
        names = metadata.get("class_names", ())
        partition = Partition.from_tensors(tensors, names)
        means = [tensors[f"class_means.{level}"] for level in range(partition.num_levels)]
        fitted = {k[len("embedder."):]: v.to(self.device) for k, v in tensors.items() if k.startswith("embedder.")}
        if fitted:
            self.embedder.load_fitted_state_dict(fitted)

        self.step = metadata["step"]
        self._check_schedule_fits(partition)
        self._set_partition(partition, means, metadata["level"])

        self.generator.load_state_dict(_prefixed(tensors, "generator."))
        self.g_optimizer.load_state_dict(
            unflatten_optimizer_state(tensors, metadata["optimizers"]["generator"], "optimizer.generator")
        )
        self.bank = build_bank(
            self.config.model,
            self.config.optim,
            self.discriminator_factory,
            self.d_optimizer_factory,
            metadata["num_discriminators"],
        ).to(self.device)
        for k, (discriminator, optimizer) in enumerate(zip(self.bank.discriminators, self.bank.optimizers)):
            discriminator.load_state_dict(_prefixed(tensors, f"discriminator.{k}."))
            optimizer.load_state_dict(
                unflatten_optimizer_state(
                    tensors, metadata["optimizers"][f"discriminator.{k}"], f"optimizer.discriminator.{k}"
                )
            )

        torch.set_rng_state(tensors["rng.torch"])
        self.noise.set_state(tensors["rng.noise"].to(torch.uint8))
        if torch.cuda.is_available():
            states = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
        self.fixed_noise = tensors["fixed_noise"].to(self.device)
        self._truncate_metrics(self.step)
        logger.info("resumed from %s at step %d, level %d", metadata["path"], self.step, self.level)

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics lines written after ``step`` by an interrupted run."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}

