"""Embedders: images (and optionally text) to feature vectors.

An :class:`Embedder` takes image batches exactly as a generator produces them, float tensors
``[B, C, H, W]`` with values in [-1, 1], of any size and with 1 or 3 channels, and returns
features ``[B, D]`` on the same device. Resizing and normalisation happen on tensors, so
generated images are routed without a round trip through PIL or the CPU.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ClipWeightsNotFoundError",
    "Embedder",
    "OpenClipEmbedder",
    "PixelEmbedder",
    "clip_weights_available",
    "embed_dataset",
]

logger = logging.getLogger(__name__)

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class ClipWeightsNotFoundError(FileNotFoundError):
    """Raised when CLIP weights are neither a readable local file nor downloadable."""


class Embedder(nn.Module, ABC):
    """Maps images, and optionally text prompts, to feature vectors.

    Subclasses implement :meth:`embed_images` and set :attr:`feature_dim`. Those that embed text
    set :attr:`supports_text` and implement :meth:`embed_text`. Embedders whose features depend
    on the data (a PCA, say) learn it in :meth:`fit` and keep it in buffers, so it is saved with
    :meth:`state_dict` and restored on resume.
    """

    feature_dim: int
    supports_text: bool = False

    @abstractmethod
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Embed images ``[B, C, H, W]`` in [-1, 1] to features ``[B, D]`` on the same device."""

    def embed_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Embed text prompts to features ``[K, D]``."""
        raise NotImplementedError(
            f"{type(self).__name__} does not embed text; use an embedder with supports_text=True "
            "(for example OpenClipEmbedder) for prompt partitions"
        )

    def fit(self, images: Iterable[torch.Tensor]) -> Embedder:
        """Learn data-dependent state from batches of real images. Most embedders need none."""
        return self

    def fitted_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors learnt by :meth:`fit`, saved in checkpoints (not pretrained weights)."""
        return {}

    def load_fitted_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`fitted_state_dict` returned."""

    def describe(self) -> str:
        """Return a short name of the feature space, used in logs and cache keys."""
        return type(self).__name__

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed_images(images)

    @property
    def device(self) -> torch.device:
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")


def _as_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.ndim != 4:
        raise ValueError(f"expected images of shape [B, C, H, W], got {tuple(images.shape)}")
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] == 3 and channels == 1:
        # ITU-R BT.601 luma weights, as PIL's "L" conversion uses.
        weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True)
    raise ValueError(f"expected 1 or 3 channels, got {images.shape[1]}")


class PixelEmbedder(Embedder):
    """Downsampled pixels as features, optionally reduced by PCA.

    It needs no weights, so it is the baseline and the offline fallback for CLIP. Images are
    area-averaged to ``size x size``, flattened, and projected on the top ``pca_components``
    principal components of the real images when that is set (learnt by :meth:`fit`).

    Parameters
    ----------
    size : int
        Side of the downsampled image.
    channels : int
        1 or 3; inputs with the other channel count are converted.
    pca_components : int or None
        Number of principal components to keep, or None for raw pixels.
    """

    def __init__(self, size: int = 8, channels: int = 1, pca_components: int | None = None) -> None:
        super().__init__()
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        raw_dim = size * size * channels
        if pca_components is not None and not 0 < pca_components <= raw_dim:
            raise ValueError(
                f"pca_components must lie in [1, {raw_dim}] for size={size}, channels={channels}, "
                f"got {pca_components}"
            )
        self.size = size
        self.channels = channels
        self.pca_components = pca_components
        self.feature_dim = pca_components or raw_dim
        self.register_buffer("pca_mean", torch.zeros(raw_dim))
        self.register_buffer("pca_basis", torch.zeros(raw_dim, self.feature_dim))
        self.register_buffer("pca_fitted", torch.tensor(False))

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        images = _as_channels(images.float(), self.channels)
        images = F.adaptive_avg_pool2d(images, self.size)
        return images.flatten(1)  # [B, size * size * channels]

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self._pixels(images.to(self.pca_mean.device))
        if self.pca_components is None:
            return pixels
        if not bool(self.pca_fitted):
            raise RuntimeError("PixelEmbedder with pca_components needs fit() on real images first")
        return (pixels - self.pca_mean) @ self.pca_basis

    def describe(self) -> str:
        pca = f", pca={self.pca_components}" if self.pca_components else ""
        return f"pixels(size={self.size}, channels={self.channels}{pca})"

    def fitted_state_dict(self) -> dict[str, torch.Tensor]:
        if self.pca_components is None:
            return {}
        return {"pca_mean": self.pca_mean, "pca_basis": self.pca_basis}

    def load_fitted_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.pca_components is None:
            return
        self.pca_mean.copy_(state["pca_mean"])
        self.pca_basis.copy_(state["pca_basis"])
        self.pca_fitted.fill_(True)

    @torch.no_grad()
    def fit(self, images: Iterable[torch.Tensor]) -> PixelEmbedder:
        if self.pca_components is None:
            return self
        pixels = torch.cat([self._pixels(batch.to(self.pca_mean.device)) for batch in images])
        pixels = pixels.double()
        mean = pixels.mean(dim=0)
        # Right singular vectors of the centred data are the principal axes.
        _, _, vh = torch.linalg.svd(pixels - mean, full_matrices=False)
        basis = vh[: self.pca_components].T
        # Fix each axis's sign so that refits on the same data give the same features.
        signs = torch.sign(basis[basis.abs().argmax(dim=0), torch.arange(basis.shape[1])])
        self.pca_mean.copy_(mean.float())
        self.pca_basis.copy_((basis * signs).float())
        self.pca_fitted.fill_(True)
        return self


def _resolve_checkpoint(pretrained: str | None) -> tuple[str | None, bool]:
    """Return the value to hand to open_clip and whether it is a local file."""
    if pretrained is None:
        return None, False
    expanded = os.path.expanduser(pretrained)
    looks_like_path = os.sep in pretrained or expanded.lower().endswith(_CHECKPOINT_SUFFIXES)
    if os.path.isfile(expanded):
        return expanded, True
    if looks_like_path:
        raise ClipWeightsNotFoundError(
            f"CLIP checkpoint file not found: {expanded}. Pass an existing file with "
            "embedder.clip_pretrained=/path/to/weights.safetensors (or .pt/.bin), or an open_clip "
            "pretrained tag such as 'openai' where downloads are possible."
        )
    return pretrained, False


def clip_weights_available(
    model_name: str, pretrained: str | None, cache_dir: str | Path | None = None
) -> tuple[bool, str]:
    """Tell, without any network access, whether CLIP weights can be loaded locally.

    Returns ``(available, reason)``: a local checkpoint file counts, and so does a pretrained tag
    whose file is already in the Hugging Face or open_clip cache.
    """
    import open_clip

    if pretrained is None:
        return False, "no CLIP weights configured (embedder.clip_pretrained is empty)"
    expanded = os.path.expanduser(pretrained)
    if os.path.isfile(expanded):
        return True, f"local checkpoint {expanded}"
    if os.sep in pretrained or expanded.lower().endswith(_CHECKPOINT_SUFFIXES):
        return False, f"CLIP checkpoint file not found: {expanded}"
    if model_name not in open_clip.list_models():
        return False, f"unknown open_clip model {model_name!r}"
    config = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not config:
        return False, f"unknown pretrained tag {pretrained!r} for {model_name}"
    hub_id = config.get("hf_hub", "")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo_id = hub_id.rstrip("/")
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
            if isinstance(found, str):
                return True, f"cached weights for {model_name}/{pretrained} at {found}"
    url = config.get("url", "")
    if url:
        open_clip_cache = Path(cache_dir or Path.home() / ".cache" / "clip")
        candidate = open_clip_cache / os.path.basename(url)
        if candidate.is_file():
            return True, f"cached weights for {model_name}/{pretrained} at {candidate}"
    return False, (
        f"weights for {model_name}/{pretrained} are not in the local cache and this run does not "
        "download them; pass embedder.clip_pretrained=/path/to/checkpoint to use a local file"
    )


class OpenClipEmbedder(Embedder):
    """CLIP image and text encoders from open_clip.

    Parameters
    ----------
    model_name : str
        An open_clip architecture, for example ``"ViT-B-32"`` (see ``open_clip.list_models()``).
    pretrained : str or None
        A pretrained tag such as ``"openai"`` (downloaded on first use where the network allows),
        a local checkpoint file, or None for random weights (useful for speed measurements only).
    device : str or torch.device
        Where the model runs.
    normalize : bool
        L2-normalise image and text features, so Euclidean distances rank like cosine ones.
    cache_dir : path or None
        open_clip's download cache.

    Raises
    ------
    ClipWeightsNotFoundError
        When ``pretrained`` names a missing file, or a tag whose weights cannot be downloaded.
    """

    supports_text = True

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "openai",
        device: str | torch.device = "cpu",
        normalize: bool = True,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        import open_clip

        if model_name not in open_clip.list_models():
            raise ValueError(
                f"unknown open_clip model {model_name!r}; choose one of open_clip.list_models(), "
                "for example 'ViT-B-32'"
            )
        weights, is_file = _resolve_checkpoint(pretrained)
        try:
            model = open_clip.create_model(
                model_name,
                pretrained=weights,
                device=device,
                cache_dir=str(cache_dir) if cache_dir is not None else None,
            )
        except RuntimeError as error:
            if is_file or weights is None:
                raise
            raise ClipWeightsNotFoundError(
                f"cannot load CLIP weights {model_name}/{weights}: {error}. Without network access, "
                "pass a local checkpoint with embedder.clip_pretrained=/path/to/weights.safetensors "
                "(or .pt/.bin) saved from this architecture."
            ) from error
        model.eval().requires_grad_(False)
        self.model = model
        self.model_name = model_name
        self.pretrained = pretrained
        self.normalize = normalize
        self.tokenizer = open_clip.get_tokenizer(model_name)

        preprocess = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = preprocess.get("size", model.visual.image_size)
        self.input_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.interpolation = preprocess.get("interpolation", "bicubic")
        mean = preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = preprocess.get("std", open_clip.OPENAI_DATASET_STD)
        self.register_buffer("mean", torch.tensor(mean, device=device).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, device=device).view(1, 3, 1, 1))
        self.feature_dim = int(self.model.encode_image(
            torch.zeros(1, 3, *self.input_size, device=device)
        ).shape[-1])

    def describe(self) -> str:
        return f"clip({self.model_name}, {self.pretrained})"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize images in [-1, 1] to the model's input size and apply CLIP's normalisation."""
        images = _as_channels(images.to(self.mean.device, torch.float32), 3)
        if tuple(images.shape[-2:]) != self.input_size:
            mode = self.interpolation if self.interpolation in ("bilinear", "bicubic") else "bilinear"
            images = F.interpolate(images, size=self.input_size, mode=mode, align_corners=False,
                                   antialias=images.shape[-1] > self.input_size[-1])
        images = (images.clamp(-1.0, 1.0) + 1.0) / 2.0  # [-1, 1] to [0, 1], CLIP's input range
        return (images - self.mean) / self.std

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        features = self.model.encode_image(self.preprocess(images)).float()
        return F.normalize(features, dim=-1) if self.normalize else features

    @torch.no_grad()
    def embed_text(self, prompts: Sequence[str], templates: Sequence[str] = ("{}",)) -> torch.Tensor:
        """Embed each prompt under every template and average, as in CLIP's zero-shot recipe.

        Returns ``[K, D]`` features, L2-normalised when the embedder normalises.
        """
        if not prompts:
            raise ValueError("embed_text needs at least one prompt")
        rows = []
        for prompt in prompts:
            texts = [template.format(prompt) for template in templates]
            tokens = self.tokenizer(texts).to(self.mean.device)
            features = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            rows.append(features.mean(dim=0))
        features = torch.stack(rows)
        return F.normalize(features, dim=-1) if self.normalize else features


@torch.no_grad()
def embed_dataset(
    embedder: Embedder,
    batches: Iterable[torch.Tensor],
    progress: callable | None = None,
) -> torch.Tensor:
    """Embed batches of images and return all features ``[N, D]`` on the CPU.

    ``progress(num_images)`` is called after each batch when given.
    """
    chunks = []
    for batch in batches:
        chunks.append(embedder.embed_images(batch.to(embedder.device)).cpu())
        if progress is not None:
            progress(len(batch))
    if not chunks:
        raise ValueError("embed_dataset received no images")
    return torch.cat(chunks)
