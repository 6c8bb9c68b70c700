"""DCGAN generator and discriminator for 32x32 and 64x64 images with 1 or 3 channels.

Any other ``nn.Module`` can take their place: the trainer needs a generator mapping latent
vectors ``[B, latent_dim]`` to images ``[B, C, H, W]`` in [-1, 1], and discriminators mapping
such images to one logit each, ``[B]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "init_dcgan_weights"]


def _num_stages(image_size: int) -> int:
    if image_size not in (32, 64):
        raise ValueError(f"DCGAN networks support image_size 32 or 64, got {image_size}")
    return int(math.log2(image_size)) - 2  # 4x4 -> image_size in stride-2 stages


def init_dcgan_weights(module: nn.Module) -> None:
    """Initialise convolutions with N(0, 0.02) and batch norms with N(1, 0.02), as in DCGAN."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """Latent vectors ``[B, latent_dim]`` to images ``[B, channels, size, size]`` in [-1, 1].

    Parameters
    ----------
    latent_dim : int
        Length of the noise vector.
    image_size : int
        32 or 64.
    channels : int
        1 or 3.
    width : int
        Channels of the last hidden stage; earlier stages double it.
    """

    def __init__(self, latent_dim: int = 100, image_size: int = 32, channels: int = 3, width: int = 64):
        super().__init__()
        stages = _num_stages(image_size)
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.channels = channels
        widths = [width * 2 ** (stages - 1 - i) for i in range(stages)]  # e.g. 256, 128, 64
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False),  # [B, w0, 4, 4]
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for in_width, out_width in zip(widths, widths[1:]):
            layers += [
                nn.ConvTranspose2d(in_width, out_width, 4, 2, 1, bias=False),
                nn.BatchNorm2d(out_width),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent.view(latent.shape[0], self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Images ``[B, channels, size, size]`` to one real/fake logit each, ``[B]``.

    Parameters
    ----------
    image_size : int
        32 or 64.
    channels : int
        1 or 3.
    width : int
        Channels of the first stage; later stages double it.
    norm : {"batch", "none"}
        Batch normalisation after every convolution but the first, or none.
    """

    def __init__(self, image_size: int = 32, channels: int = 3, width: int = 64, norm: str = "batch"):
        super().__init__()
        if norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', got {norm!r}")
        stages = _num_stages(image_size)
        widths = [width * 2**i for i in range(stages)]  # e.g. 64, 128, 256
        layers: list[nn.Module] = [
            nn.Conv2d(channels, widths[0], 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for in_width, out_width in zip(widths, widths[1:]):
            layers.append(nn.Conv2d(in_width, out_width, 4, 2, 1, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(out_width))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 0))  # [B, 1, 1, 1]
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).flatten()
