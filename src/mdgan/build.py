"""Factories that turn the typed configuration sections into components."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from .config import EmbedderConfig, GrowthConfig, ModelConfig, OptimConfig, PartitionConfig
from .discriminators import DiscriminatorBank, RoutedDiscriminatorBank, VmappedDiscriminatorBank
from .embedders import Embedder, OpenClipEmbedder, PixelEmbedder, clip_weights_available
from .growth import ConstantGrowthSchedule, FixedGrowthSchedule, GrowthSchedule
from .networks import DCGANDiscriminator, DCGANGenerator
from .partitioners import Partitioner, PromptPartitioner, WardPartitioner
from .selectors import build_selector

__all__ = [
    "build_bank",
    "build_discriminator_factory",
    "build_embedder",
    "build_generator",
    "build_optimizer_factory",
    "build_partitioner",
    "build_schedule",
    "build_selector",
    "resolve_device",
]

logger = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` is the first CUDA device when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RuntimeError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"device {name!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use 'cpu'")
    return device


def build_embedder(
    config: EmbedderConfig, channels: int, device: torch.device
) -> tuple[Embedder, str]:
    """Create the configured embedder and return it with the reason for the choice.

    With ``kind="auto"``, CLIP is used when its weights can be loaded without a download: a
    local file, or a tag already in the cache. Otherwise the pixel embedder is used.
    """
    kind = config.kind
    if kind == "auto":
        available, why = clip_weights_available(
            config.clip_model, config.clip_pretrained, config.clip_cache_dir
        )
        kind = "clip" if available else "pixel"
        reason = f"CLIP weights found ({why})" if available else f"CLIP unavailable: {why}"
    else:
        reason = f"embedder.kind is {kind!r}"
    if kind == "clip":
        embedder: Embedder = OpenClipEmbedder(
            config.clip_model,
            config.clip_pretrained,
            device=device,
            normalize=config.normalize,
            cache_dir=config.clip_cache_dir,
        )
    else:
        embedder = PixelEmbedder(config.pixel_size, channels, config.pixel_pca_components).to(device)
    logger.info("embedder %s (%s)", embedder.describe(), reason)
    return embedder, reason


def build_partitioner(config: PartitionConfig, embedder: Embedder) -> Partitioner:
    """Create the Ward or prompt partitioner; prompts need an embedder that embeds text."""
    if config.method == "ward":
        return WardPartitioner(
            config.num_classes,
            config.mode,
            config.max_exact_size,
            config.seed,
            algorithm=config.algorithm,
            num_microclusters=config.num_microclusters,
        )
    if not embedder.supports_text:
        raise ValueError(
            f"partition.method 'prompts' needs an embedder that embeds text, but "
            f"{embedder.describe()} does not; set embedder.kind=clip with local CLIP weights"
        )
    if config.prompt_hierarchy is not None:
        return PromptPartitioner(
            hierarchy=config.prompt_hierarchy, embedder=embedder, templates=config.prompt_templates
        )
    return PromptPartitioner(config.prompts, embedder=embedder, templates=config.prompt_templates)


def build_schedule(config: GrowthConfig, steps_per_epoch: int) -> GrowthSchedule:
    if config.kind == "constant":
        return ConstantGrowthSchedule(config.level)
    return FixedGrowthSchedule(config.milestones, config.unit, steps_per_epoch)


def build_generator(model: ModelConfig, image_size: int, channels: int) -> nn.Module:
    return DCGANGenerator(model.latent_dim, image_size, channels, model.generator_width)


def build_discriminator_factory(
    model: ModelConfig, image_size: int, channels: int
) -> Callable[[], nn.Module]:
    return partial(
        DCGANDiscriminator, image_size, channels, model.discriminator_width, model.discriminator_norm
    )


def build_bank(
    model: ModelConfig,
    optim: OptimConfig,
    discriminator_factory: Callable[[], nn.Module],
    optimizer_factory: Callable,
    num_discriminators: int,
) -> DiscriminatorBank:
    """Create the configured discriminator bank (routed loop or vmapped)."""
    bank_class = VmappedDiscriminatorBank if model.discriminator_bank == "vmapped" else RoutedDiscriminatorBank
    return bank_class(discriminator_factory, optimizer_factory, num_discriminators, loss=optim.loss)


def build_optimizer_factory(optim: OptimConfig, lr: float) -> Callable:
    """Adam with the configured betas, as a function of the parameters to optimise."""
    return partial(torch.optim.Adam, lr=lr, betas=tuple(optim.betas))

