"""A small Fashion-MNIST classifier whose penultimate features serve as an offline FD space.

Inception-v3 was trained on ImageNet photographs, so its features describe 28x28 grey clothing
items poorly, and its weights cannot be downloaded on machines without network access. For
MNIST-like data the usual practice is to compute the Fréchet distance in the feature space of
a classifier trained on the data itself. :class:`FashionMNISTClassifier` is that classifier:
three convolution blocks and a 128-unit hidden layer, trained on the 60,000 training images at
32x32 by ``scripts/train_fashion_classifier.py`` with a fixed seed.

mdgan ships the trained weights (0.6 MB) in ``mdgan/weights/``, so the metric works from a
fresh clone. :func:`find_classifier_weights` looks there and then in the cache directory.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .data import default_cache_dir

__all__ = [
    "ARCHITECTURE",
    "CLASSIFIER_FILE_NAME",
    "ClassifierWeightsNotFoundError",
    "FashionMNISTClassifier",
    "classifier_accuracy",
    "dataset_tensors",
    "file_digest",
    "find_classifier_weights",
    "load_fashion_classifier",
    "save_fashion_classifier",
    "train_fashion_classifier",
]

logger = logging.getLogger(__name__)

ARCHITECTURE = "fmnist-classifier-v1"
"""Name stored in the weights file; a file of another architecture is rejected."""

CLASSIFIER_FILE_NAME = "fmnist_classifier.safetensors"
PACKAGED_WEIGHTS = Path(__file__).with_name("weights") / CLASSIFIER_FILE_NAME
TRAIN_COMMAND = "python scripts/train_fashion_classifier.py"


class ClassifierWeightsNotFoundError(FileNotFoundError):
    """Raised when the Fashion-MNIST classifier's weights file is missing."""


class FashionMNISTClassifier(nn.Module):
    """Convolutional classifier of the 10 Fashion-MNIST classes at 32x32.

    :meth:`forward` returns logits ``[B, 10]``, and :meth:`features` returns the 128 hidden
    activations before the last layer, the feature space of ``fd_fmnist-classifier``. Inputs
    are images as a generator produces them: ``[B, C, H, W]`` in [-1, 1] with 1 or 3 channels
    and any size. They are converted to grey (ITU-R BT.601 weights) and resized to 32x32 with
    antialiased bilinear interpolation, as :func:`mdgan.data.load_fashion_mnist` resizes the
    28x28 originals.
    """

    feature_dim = 128
    num_classes = 10
    image_size = 32

    def __init__(self) -> None:
        super().__init__()

        def block(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
                nn.BatchNorm2d(outputs),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.blocks = nn.Sequential(block(1, 16), block(16, 32), block(32, 64))  # 32 -> 4 pixels
        self.hidden = nn.Linear(64 * 4 * 4, self.feature_dim)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(self.feature_dim, self.num_classes)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images [B, 1 or 3, H, W], got {tuple(images.shape)}")
        images = images.to(self.hidden.weight.device, torch.float32)
        if images.shape[1] == 3:
            weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images * weights).sum(dim=1, keepdim=True)
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            images = F.interpolate(
                images, size=(self.image_size, self.image_size), mode="bilinear",
                antialias=True, align_corners=False,
            )
        return images

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``[B, 128]`` of images in [-1, 1]."""
        hidden = self.blocks(self._prepare(images)).flatten(1)
        return F.relu(self.hidden(hidden))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, in hexadecimal."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_classifier_weights(path: str | Path | None = None) -> Path:
    """Locate the classifier's weights file.

    An explicit ``path`` must exist. Without one, the file shipped in ``mdgan/weights/`` is
    used, then ``$MDGAN_CACHE_DIR/weights/`` (``~/.cache/mdgan/weights/`` by default).

    Raises
    ------
    ClassifierWeightsNotFoundError
        Naming the places searched and the command that creates the file.
    """
    if path is not None:
        path = Path(path).expanduser()
        if path.is_file():
            return path
        raise ClassifierWeightsNotFoundError(
            f"Fashion-MNIST classifier weights not found: {path}. Create them with "
            f"'{TRAIN_COMMAND} --out {path}', or leave eval.classifier_weights unset to use "
            "the file shipped with mdgan."
        )
    cached = default_cache_dir() / "weights" / CLASSIFIER_FILE_NAME
    for candidate in (PACKAGED_WEIGHTS, cached):
        if candidate.is_file():
            return candidate
    raise ClassifierWeightsNotFoundError(
        f"Fashion-MNIST classifier weights not found: looked for {PACKAGED_WEIGHTS} and "
        f"{cached}. Create them with '{TRAIN_COMMAND} --out {cached}' (a few minutes on a CPU), "
        "or pass the file with eval.classifier_weights=PATH (--classifier-weights PATH)."
    )


def save_fashion_classifier(
    model: FashionMNISTClassifier, path: str | Path, metadata: dict[str, str]
) -> Path:
    """Write the classifier's weights and string metadata to a safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"architecture": ARCHITECTURE, **metadata})
    return path


def load_fashion_classifier(
    path: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[FashionMNISTClassifier, Path]:
    """Load the classifier in eval mode from ``path`` (see :func:`find_classifier_weights`).

    Returns the model and the file it came from.
    """
    from safetensors import safe_open

    path = find_classifier_weights(path)
    with safe_open(str(path), framework="pt") as handle:
        architecture = (handle.metadata() or {}).get("architecture")
    if architecture != ARCHITECTURE:
        raise ValueError(
            f"{path} contains weights of architecture {architecture!r}, expected {ARCHITECTURE!r}; "
            f"recreate the file with '{TRAIN_COMMAND} --out {path}'"
        )
    model = FashionMNISTClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval().requires_grad_(False), path


def train_fashion_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 4,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> FashionMNISTClassifier:
    """Train a :class:`FashionMNISTClassifier` with Adam and cross-entropy.

    Parameters
    ----------
    images
        ``float32 [N, 1, H, W]`` in [-1, 1].
    labels
        ``int64 [N]`` class indices 0 to 9.
    epochs, batch_size, lr
        Length of training, images per step and Adam's learning rate; the learning rate falls
        to zero along a cosine over the run.
    seed
        Seed of the initial weights, the data order and dropout.
    progress
        Called as ``progress(epoch, step, loss)`` after every step.
    """
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    torch.manual_seed(seed)
    model = FashionMNISTClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = max(1, len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        permutation = torch.randperm(len(images), generator=order)
        for step in range(steps_per_epoch):
            indices = permutation[step * batch_size : (step + 1) * batch_size]
            loss = F.cross_entropy(model(images[indices]), labels[indices])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if progress is not None:
                progress(epoch, step, float(loss.detach()))
    return model.eval()


@torch.no_grad()
def classifier_accuracy(
    model: FashionMNISTClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> float:
    """Share of ``images`` whose highest logit is their label."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size])
        correct += int((logits.argmax(dim=1).cpu() == labels[start : start + batch_size]).sum())
    return correct / max(1, len(images))


def dataset_tensors(dataset, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Return all images of an :class:`mdgan.data.ImageArray` as float32 ``[N, C, H, W]`` and the
    labels as int64 ``[N]``."""
    images = dataset.batch(np.arange(len(dataset)))
    return images, torch.as_tensor(labels, dtype=torch.int64)
