"""Inception-v3 features for FID, through torch-fidelity and a local weights file.

Published FIDs use the Inception-v3 graph that TensorFlow released on 2015-12-05, its
2048-dimensional pool features and a TensorFlow-1.x bilinear resize to 299x299.
torch-fidelity's ``FeatureExtractorInceptionV3`` reproduces all three in PyTorch. mdgan never
downloads its weights: it loads them from a file, so FID also works on machines without
network access once the file has been copied there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from .data import default_cache_dir

__all__ = [
    "INCEPTION_FILE_NAMES",
    "InceptionFeatures",
    "InceptionWeightsNotFoundError",
    "find_inception_weights",
    "inception_weights_dirs",
]

logger = logging.getLogger(__name__)

INCEPTION_FILE_NAMES = (
    "pt_inception-2015-12-05-6726825d.pth",
    "weights-inception-2015-12-05-6726825d.pth",
)
"""Accepted file names: pytorch-fid's conversion of the 2015-12-05 TensorFlow weights, and
torch-fidelity's. Both state dicts have the parameter names and shapes of torch-fidelity's
network (checked against torch-fidelity 0.4.0 and torchvision's Inception3)."""

PYTORCH_FID_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)


class InceptionWeightsNotFoundError(FileNotFoundError):
    """Raised when no Inception-v3 weights file is found."""


def inception_weights_dirs() -> list[Path]:
    """Folders searched for the weights: ``$MDGAN_CACHE_DIR/weights`` (``~/.cache/mdgan/weights``)
    and torch hub's checkpoint folder, where torch-fidelity's own downloads go."""
    return [default_cache_dir() / "weights", Path(torch.hub.get_dir()) / "checkpoints"]


def find_inception_weights(path: str | Path | None = None) -> Path:
    """Locate the Inception-v3 weights file.

    An explicit ``path`` must exist. Without one, every name of :data:`INCEPTION_FILE_NAMES`
    is looked for in every folder of :func:`inception_weights_dirs`.

    Raises
    ------
    InceptionWeightsNotFoundError
        Naming the file expected, where to put it and the option that points to it.
    """
    folder = inception_weights_dirs()[0]
    how = (
        f"Download {INCEPTION_FILE_NAMES[0]} on a machine with network access ({PYTORCH_FID_URL}) "
        f"and copy it to {folder}/, or pass its path with --inception-weights PATH "
        "(eval.inception_weights=PATH)."
    )
    if path is not None:
        path = Path(path).expanduser()
        if path.is_file():
            return path
        raise InceptionWeightsNotFoundError(f"Inception-v3 weights file not found: {path}. {how}")
    tried = []
    for directory in inception_weights_dirs():
        for name in INCEPTION_FILE_NAMES:
            candidate = directory / name
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
    raise InceptionWeightsNotFoundError(
        f"Inception-v3 weights for FID not found: looked for {', '.join(tried)}. {how}"
    )


class InceptionFeatures(nn.Module):
    """The 2048 pool features of the FID Inception-v3, for images in [-1, 1].

    Images are quantised to uint8 as if saved to PNG, grey images are repeated over the three
    channels, and torch-fidelity's ``FeatureExtractorInceptionV3`` resizes them to 299x299 the
    way TensorFlow 1.x did and runs the network.

    Parameters
    ----------
    weights_path : path, optional
        The weights file; see :func:`find_inception_weights` for the default places.
    device : str or torch.device
        Where the network runs.
    """

    feature_dim = 2048

    def __init__(self, weights_path: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights_path = find_inception_weights(weights_path)
        # An explicit path keeps torch-fidelity from downloading.
        self.network = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(self.weights_path)
        ).to(device)
        logger.info("Inception-v3 weights read from %s", self.weights_path)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images [B, 1 or 3, H, W], got {tuple(images.shape)}")
        device = next(self.network.parameters()).device
        pixels = ((images.to(device, torch.float32).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        with torch.no_grad():
            (features,) = self.network(pixels.contiguous())
        return features
