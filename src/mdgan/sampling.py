"""Generating images from a saved checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .build import build_generator, resolve_device
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .grids import save_grid

__all__ = ["generate", "load_generator", "save_images"]


def load_generator(path: str | Path, device: str = "auto") -> tuple[nn.Module, dict]:
    """Rebuild the DCGAN generator of a checkpoint (a file or a run directory) in eval mode.

    Returns the generator and the checkpoint's metadata. A generator of another class must be
    built by the caller and loaded from the ``generator.*`` tensors.
    """
    target = resolve_device(device)
    tensors, metadata = load_checkpoint(path, device="cpu")
    config = TrainConfig.model_validate(metadata["config"])
    generator = build_generator(config.model, metadata["image_size"], metadata["channels"])
    state = {k[len("generator."):]: v for k, v in tensors.items() if k.startswith("generator.")}
    generator.load_state_dict(state)
    return generator.to(target).eval(), metadata


@torch.no_grad()
def generate(generator: nn.Module, num: int, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    """Draw ``num`` images ``[num, C, H, W]`` in [-1, 1] from seeded Gaussian noise."""
    noise = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    chunks = []
    for start in range(0, num, batch_size):
        size = min(batch_size, num - start)
        latent = torch.randn(size, generator.latent_dim, generator=noise)
        chunks.append(generator(latent.to(device)).cpu())
    return torch.cat(chunks)


def save_images(images: torch.Tensor, out: str | Path, as_files: bool = False) -> Path:
    """Save a grid to ``out`` (.png, .jpg or .webp), or one PNG per image into the folder ``out``."""
    out = Path(out)
    if not as_files:
        if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
            raise ValueError(f"unsupported image file {out}: use a .png, .jpg or .webp name for the grid")
        columns = max(1, int(len(images) ** 0.5))
        return save_grid(images, out, columns)
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        save_grid(image.unsqueeze(0), out / f"{index:05d}.png", 1)
    return out
