"""Compose a CLIP-MDGAN from mdgan's components with your own generator and discriminator.

The generator is a small MLP and the discriminators are a two-layer convolutional network,
neither from mdgan. Everything else (embedder, Ward partition, selector, growth schedule) is
chosen explicitly instead of from the configuration, which only sets the run's length and
outputs.

    python examples/custom_gan.py --out runs/custom --steps 300
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from torch import nn

from mdgan import (
    FixedGrowthSchedule,
    PixelEmbedder,
    TorchSelector,
    Trainer,
    WardPartitioner,
    load_config,
)
from mdgan.data import load_fashion_mnist


class MLPGenerator(nn.Module):
    """Noise ``[B, latent_dim]`` to 32x32 grey images in [-1, 1]."""

    def __init__(self, latent_dim: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.latent_dim = latent_dim  # the trainer reads this to draw noise
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 32 * 32),
            nn.Tanh(),
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent).view(-1, 1, 32, 32)


class SmallDiscriminator(nn.Module):
    """32x32 grey images to one logit each."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(16, 32, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(32 * 8 * 8, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).flatten()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/custom"), help="run directory")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--images", type=int, default=5000, help="Fashion-MNIST images to use")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    dataset = load_fashion_mnist(None, "train", 32, 1, download=True, cache_dir=None, max_images=args.images)
    config = load_config(
        None,
        [
            f"output.dir={args.out}",
            f"optim.steps={args.steps}",
            "optim.batch_size=64",
            f"output.log_every={max(1, args.steps // 20)}",
            f"output.sample_every={max(1, args.steps // 3)}",
            f"output.checkpoint_every={args.steps}",
            "device=cpu",
        ],
    )
    trainer = Trainer(
        config,
        dataset=dataset,
        generator=MLPGenerator(),
        discriminator_factory=SmallDiscriminator,
        embedder=PixelEmbedder(size=8, channels=1, pca_components=16),
        partitioner=WardPartitioner(num_classes=4, mode="binary", max_exact_size=3000),
        selector=TorchSelector(),
        # One discriminator, two after a third of the run, four after two thirds.
        schedule=FixedGrowthSchedule([args.steps // 3, 2 * args.steps // 3], unit="steps"),
    )
    run_dir = trainer.train()
    print(f"run written to {run_dir} with {trainer.bank.num_discriminators} discriminators")


if __name__ == "__main__":
    main()
