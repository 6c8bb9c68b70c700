"""Training images: Fashion-MNIST and image folders, decoded once into a uint8 array.

Every source is decoded into one ``uint8`` array of shape ``[N, H, W, C]`` wrapped in
:class:`ImageArray`, which hands out ``float32`` tensors scaled to ``[-1, 1]``, either one image at
a time (a ``torch.utils.data.Dataset``) or a whole batch at once with :meth:`ImageArray.batch`.

Fashion-MNIST is read from its idx files: from ``data.path`` when given, otherwise from the
Debian package ``dataset-fashion-mnist`` or a torchvision download. Image folders are decoded
with Pillow in a thread pool, and the decoded array is cached as ``.npy`` under the cache
directory, so a second run with unchanged files skips decoding.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import math
import operator
import os
import re
import secrets
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal
from urllib.error import URLError

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

if TYPE_CHECKING:
    from mdgan.config import DataConfig

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "ImageArray",
    "default_cache_dir",
    "load_dataset",
    "load_fashion_mnist",
    "load_fashion_mnist_labels",
    "load_image_folder",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
"""File extensions (compared in lower case) that :func:`load_image_folder` decodes."""

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Folder in which the Debian package ``dataset-fashion-mnist`` installs the idx files."""

ProgressCallback = Callable[[int, int], None]

_FASHION_MNIST_IMAGE_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
# Magic number of an idx file of unsigned bytes with 3 dimensions (images, rows, columns).
_IDX3_UBYTE_MAGIC = 0x00000803
# Magic number of an idx file of unsigned bytes with 1 dimension (labels).
_IDX1_UBYTE_MAGIC = 0x00000801
_IDX1_HEADER_BYTES = 8
_IDX_HEADER_BYTES = 16
# Images resized per torch call, which bounds the float32 copy to about 64 MiB at 64x64.
_RESIZE_CHUNK = 4096

# CelebA's aligned images are 178x218, and the usual preprocessing keeps the centre 178x178 square.
_CELEBA_FOLDER_NAME = "img_align_celeba"
_CELEBA_CROP = 178

# Folder images are resized with Lanczos. Before that, the JPEG decoder reduces them (Image.draft)
# only while at least this factor times the target size remains, as Image.thumbnail does.
_RESAMPLE = Image.Resampling.LANCZOS
_DRAFT_REDUCING_GAP = 2.0
_DECODE_BLOCK = 256
_MAX_DECODE_THREADS = 16
_LISTED_SKIPS = 5

# Bump when decoding changes, so that old cache entries are no longer read.
_CACHE_FORMAT = 1
_CACHE_SUBDIR = "images"

# Errors Pillow raises on corrupt, truncated or oversized files. UnidentifiedImageError is an
# OSError. Other exceptions propagate.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


class DatasetError(Exception):
    """Base class of the errors raised when training images cannot be loaded."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """Raised when a dataset's files or folder do not exist."""


class DatasetFormatError(DatasetError, ValueError):
    """Raised when dataset files exist but cannot be read (bad idx header, no decodable image)."""


class ImageArray(torch.utils.data.Dataset):
    """Decoded training images held as one uint8 array.

    Items are ``(image, index)`` pairs, where ``image`` is a ``float32`` tensor ``[C, H, W]``
    scaled from ``[0, 255]`` to ``[-1, 1]`` and ``index`` is the position of the image, so a
    ``DataLoader`` batch carries the indices of its images.

    Parameters
    ----------
    images
        ``uint8`` array ``[N, H, W, C]`` with ``H == W`` and ``C`` in ``{1, 3}``.
    name
        Short name of the dataset, such as ``"fashion-mnist-train"`` or the folder name.
    paths
        Source file of each image, or None when the images do not come from separate files.
    skipped
        ``(path, reason)`` of every file that could not be decoded.
    """

    images: np.ndarray
    paths: list[str] | None
    skipped: list[tuple[str, str]]
    name: str

    def __init__(
        self,
        images: np.ndarray,
        name: str,
        paths: Sequence[str] | None = None,
        skipped: Sequence[tuple[str, str]] = (),
    ) -> None:
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 array [N, H, W, C], got "
                f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
            )
        count, height, width, channels = images.shape
        if channels not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels, got shape {images.shape}")
        if height != width:
            raise ValueError(f"images must be square, got shape {images.shape}")
        if paths is not None and len(paths) != count:
            raise ValueError(f"got {len(paths)} paths for {count} images")
        self.images = images
        self.name = name
        self.paths = list(paths) if paths is not None else None
        self.skipped = [(str(path), str(reason)) for path, reason in skipped]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        position = operator.index(index)
        count = len(self)
        if not -count <= position < count:
            raise IndexError(f"index {index} is out of range for {count} images")
        position %= count
        return self.batch(np.array([position]))[0], position

    def __repr__(self) -> str:
        return (
            f"ImageArray(name={self.name!r}, images={len(self)}, image_size={self.image_size}, "
            f"channels={self.channels}, skipped={len(self.skipped)})"
        )

    @property
    def channels(self) -> int:
        """Number of colour channels, 1 or 3."""
        return int(self.images.shape[3])

    @property
    def image_size(self) -> int:
        """Side of the square images in pixels."""
        return int(self.images.shape[1])

    def batch(self, indices: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
        """Gather images by index into one tensor.

        Parameters
        ----------
        indices
            One-dimensional integer indices, on any device.

        Returns
        -------
        torch.Tensor
            ``float32`` tensor ``[B, C, H, W]`` in ``[-1, 1]`` on the CPU, equal to stacking
            ``self[i][0]`` for each index.

        Raises
        ------
        TypeError
            If the indices are not integers.
        IndexError
            If an index is out of range.
        """
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        index_array = np.asarray(indices)
        if index_array.size == 0:
            index_array = index_array.astype(np.int64)
        if index_array.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got dtype {index_array.dtype}")
        if index_array.ndim != 1:
            raise ValueError(f"indices must be one-dimensional, got shape {index_array.shape}")
        # Fancy indexing copies, so the tensor owns writable memory.
        pixels = torch.from_numpy(self.images[index_array])
        return _uint8_to_unit_range(pixels)


def _uint8_to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """Convert uint8 ``[B, H, W, C]`` to contiguous float32 ``[B, C, H, W]`` in ``[-1, 1]``."""
    images = pixels.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
    return images.div_(127.5).sub_(1.0)


def default_cache_dir() -> Path:
    """Return the cache directory: ``$MDGAN_CACHE_DIR`` if set, else ``~/.cache/mdgan``."""
    configured = os.environ.get("MDGAN_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "mdgan"


def load_dataset(config: DataConfig, progress: ProgressCallback | None = None) -> ImageArray:
    """Load the training images that a ``DataConfig`` describes.

    Parameters
    ----------
    config
        The ``data`` section of the configuration. ``channels=None`` means 1 for Fashion-MNIST
        and 3 for image folders.
    progress
        Called as ``progress(done, total)`` while an image folder is decoded. Fashion-MNIST
        reports no progress, because it loads in a few seconds.

    Returns
    -------
    ImageArray
        The decoded images.
    """
    if config.source == "fashion-mnist":
        return load_fashion_mnist(
            root=config.path,
            split=config.split,
            image_size=config.image_size,
            channels=config.channels or 1,
            download=config.download,
            cache_dir=config.cache_dir,
            max_images=config.max_images,
        )
    if config.source == "folder":
        if config.path is None:
            raise ValueError("data.path is required when data.source is 'folder'")
        return load_image_folder(
            root=config.path,
            image_size=config.image_size,
            channels=config.channels or 3,
            center_crop=config.center_crop,
            cache_dir=config.cache_dir,
            max_images=config.max_images,
            progress=progress,
        )
    raise ValueError(f"unknown data.source {config.source!r}: use 'fashion-mnist' or 'folder'")


def _check_output_shape(image_size: int, channels: int, max_images: int | None) -> None:
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if max_images is not None and max_images <= 0:
        raise ValueError(f"max_images must be positive or None, got {max_images}")


# --------------------------------------------------------------------------------------------
# Fashion-MNIST


def load_fashion_mnist(
    root: Path | None,
    split: str,
    image_size: int,
    channels: int,
    download: bool,
    cache_dir: Path | None,
    max_images: int | None,
) -> ImageArray:
    """Load Fashion-MNIST images from their idx files.

    The images file (``train-images-idx3-ubyte`` or ``t10k-images-idx3-ubyte``, gzipped or
    not) is looked up in this order:

    1. ``root`` and ``root/FashionMNIST/raw`` when ``root`` is given. An explicit ``root``
       is the only place searched, so a wrong ``data.path`` is an error rather than a
       silent switch to another copy, and nothing is downloaded into it.
    2. :data:`DEBIAN_FASHION_MNIST_DIR`, installed by ``apt-get install dataset-fashion-mnist``.
    3. ``cache_dir/FashionMNIST/raw``, where an earlier download went.
    4. A torchvision download into ``cache_dir`` when ``download`` is true.

    The 28x28 images are resized to ``image_size`` once, with antialiased bilinear
    interpolation. The result is not cached, because parsing and resizing the 60,000
    training images took 0.6 to 3 seconds on 2 CPU cores (AMD EPYC) at 32x32 and 64x64.

    Parameters
    ----------
    root
        Folder holding the idx files, or None to search the default places.
    split
        ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
    image_size
        Side of the square output images in pixels.
    channels
        1 keeps the grey images, and 3 repeats the grey value in every channel.
    download
        Let torchvision download the files when no local copy is found.
    cache_dir
        Download folder, or None for :func:`default_cache_dir`.
    max_images
        Keep only the first ``max_images`` images of the split.

    Returns
    -------
    ImageArray
        Images named ``fashion-mnist-<split>``, with ``paths=None``.

    Raises
    ------
    DatasetNotFoundError
        If no idx file is found and none could be downloaded. The message lists the paths
        tried and the ways to get the data.
    DatasetFormatError
        If the idx file is not a valid file of uint8 images.
    """
    _check_output_shape(image_size, channels, max_images)
    if split not in _FASHION_MNIST_IMAGE_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    path = _find_fashion_mnist(root, split, download, cache_dir)
    raw = _read_idx_images(path)
    if max_images is not None:
        raw = raw[:max_images]
    images = _resize_grey_images(raw, image_size, channels)
    logger.info(
        "loaded %d Fashion-MNIST %s images from %s at %dx%d with %d channel(s)",
        len(images), split, path, image_size, image_size, channels,
    )
    return ImageArray(images, name=f"fashion-mnist-{split}")


def load_fashion_mnist_labels(
    root: Path | None,
    split: str,
    download: bool,
    cache_dir: Path | None,
    max_images: int | None,
) -> np.ndarray:
    """Load the class labels (0 to 9) of the Fashion-MNIST images, int64 ``[N]``.

    The labels file (``train-labels-idx1-ubyte`` or ``t10k-labels-idx1-ubyte``) is read from the
    folder in which :func:`load_fashion_mnist` finds the images, so label ``i`` belongs to the
    image ``i`` that function returns with the same arguments.

    Raises
    ------
    DatasetNotFoundError
        If the images or the labels file next to them are not found.
    DatasetFormatError
        If the labels file is not a valid idx1 file of unsigned bytes.
    """
    if split not in _FASHION_MNIST_IMAGE_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images_path = _find_fashion_mnist(root, split, download, cache_dir)
    stem = _FASHION_MNIST_IMAGE_FILES[split].replace("-images-idx3-", "-labels-idx1-")
    path = _find_idx_file([images_path.parent], stem)
    if path is None:
        raise DatasetNotFoundError(
            f"Fashion-MNIST {split} labels not found: expected {stem}.gz (or {stem}) next to "
            f"the images in {images_path.parent}; copy it there from the same source"
        )
    data = _read_idx_bytes(path)
    if len(data) < _IDX1_HEADER_BYTES:
        raise DatasetFormatError(f"invalid idx file {path}: {len(data)} bytes, shorter than the header")
    magic, count = struct.unpack(">II", data[:_IDX1_HEADER_BYTES])
    if magic != _IDX1_UBYTE_MAGIC or len(data) - _IDX1_HEADER_BYTES != count:
        raise DatasetFormatError(
            f"invalid idx file {path}: magic number 0x{magic:08x} and {len(data) - _IDX1_HEADER_BYTES} "
            f"label bytes, expected 0x{_IDX1_UBYTE_MAGIC:08x} and the {count} labels its header declares"
        )
    labels = np.frombuffer(data, dtype=np.uint8, offset=_IDX1_HEADER_BYTES).astype(np.int64)
    return labels[:max_images] if max_images is not None else labels


def _find_idx_file(folders: Sequence[Path], stem: str) -> Path | None:
    for folder in folders:
        for name in (f"{stem}.gz", stem):
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def _find_fashion_mnist(root: Path | None, split: str, download: bool, cache_dir: Path | None) -> Path:
    stem = _FASHION_MNIST_IMAGE_FILES[split]

    if root is not None:
        root = Path(root).expanduser()
        folders = [root, root / "FashionMNIST" / "raw"]
        found = _find_idx_file(folders, stem)
        if found is not None:
            return found
        tried = ", ".join(str(folder / f"{stem}.gz") for folder in folders)
        raise DatasetNotFoundError(
            f"Fashion-MNIST {split} images not found: tried {tried}. "
            f"Set data.path=DIR to a folder holding {stem}.gz (or the unpacked {stem}), or "
            f"remove data.path to use the copy from `apt-get install dataset-fashion-mnist` "
            f"or let torchvision download it (data.download=true)."
        )

    download_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    download_folder = download_root / "FashionMNIST" / "raw"
    folders = [DEBIAN_FASHION_MNIST_DIR, download_folder]
    found = _find_idx_file(folders, stem)
    if found is not None:
        return found

    if download:
        failure = _download_fashion_mnist(download_root, split)
        found = _find_idx_file([download_folder], stem)
        if found is not None:
            return found
        download_note = f"the download into {download_root} failed: {failure}"
    else:
        download_note = "downloading is disabled (data.download=false)"

    tried = ", ".join(str(folder / f"{stem}.gz") for folder in folders)
    raise DatasetNotFoundError(
        f"Fashion-MNIST {split} images not found: tried {tried}, and {download_note}. "
        f"Install them with `apt-get install dataset-fashion-mnist`, set data.path=DIR to a "
        f"folder holding {stem}.gz, or allow the download with data.download=true and network "
        f"access."
    )


def _download_fashion_mnist(download_root: Path, split: str) -> str | None:
    """Download Fashion-MNIST with torchvision and return the error message, or None on success."""
    from torchvision.datasets import FashionMNIST

    logger.info("downloading Fashion-MNIST into %s", download_root)
    try:
        FashionMNIST(root=str(download_root), train=split == "train", download=True)
    except (URLError, OSError, RuntimeError) as error:
        # torchvision raises RuntimeError when every mirror fails or a checksum does not match.
        logger.warning("Fashion-MNIST download into %s failed: %s", download_root, error)
        return str(error)
    return None


def _read_idx_bytes(path: Path) -> bytes:
    """Read the bytes of an idx file, gunzipping it when the name ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetFormatError(f"cannot read idx file {path}: {error}") from error


def _read_idx_images(path: Path) -> np.ndarray:
    """Parse an idx3-ubyte file (gzipped when the name ends in .gz) into ``uint8 [N, rows, cols]``."""
    data = _read_idx_bytes(path)
    if len(data) < _IDX_HEADER_BYTES:
        raise DatasetFormatError(
            f"invalid idx file {path}: {len(data)} bytes, shorter than the "
            f"{_IDX_HEADER_BYTES}-byte header"
        )
    magic, count, rows, columns = struct.unpack(">IIII", data[:_IDX_HEADER_BYTES])
    if magic != _IDX3_UBYTE_MAGIC:
        raise DatasetFormatError(
            f"invalid idx file {path}: magic number 0x{magic:08x}, expected "
            f"0x{_IDX3_UBYTE_MAGIC:08x} (unsigned bytes, 3 dimensions)"
        )
    expected_bytes = count * rows * columns
    pixel_bytes = len(data) - _IDX_HEADER_BYTES
    if pixel_bytes != expected_bytes:
        raise DatasetFormatError(
            f"invalid idx file {path}: the header declares {count} images of {rows}x{columns} "
            f"({expected_bytes} bytes) but the file contains {pixel_bytes} bytes of pixels"
        )
    if count == 0:
        raise DatasetFormatError(f"invalid idx file {path}: it contains no images")
    return np.frombuffer(data, dtype=np.uint8, offset=_IDX_HEADER_BYTES).reshape(count, rows, columns)


def _resize_grey_images(raw: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """Resize ``uint8 [N, h, w]`` to ``uint8 [N, size, size, channels]``, chunk by chunk."""
    count, height, width = raw.shape
    images = np.empty((count, image_size, image_size, channels), dtype=np.uint8)
    for start in range(0, count, _RESIZE_CHUNK):
        # The copy makes the chunk writable, which torch.from_numpy expects.
        chunk = torch.from_numpy(raw[start : start + _RESIZE_CHUNK].copy())
        if (height, width) != (image_size, image_size):
            resized = F.interpolate(
                chunk.unsqueeze(1).to(torch.float32),
                size=(image_size, image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            chunk = resized.round_().clamp_(0, 255).to(torch.uint8).squeeze(1)
        # Broadcasting over the last axis repeats the grey value when channels == 3.
        images[start : start + len(chunk)] = chunk.numpy()[..., None]
    return images


# --------------------------------------------------------------------------------------------
# Image folders


@dataclass(frozen=True)
class _ImageFile:
    relative_path: str  # POSIX path relative to the folder root
    size: int
    mtime_ns: int
    crop: int | None  # side of the centre square in source pixels, or None for the shorter side


def load_image_folder(
    root: Path,
    image_size: int,
    channels: int,
    center_crop: int | Literal["auto"] | None,
    cache_dir: Path | None,
    max_images: int | None,
    progress: ProgressCallback | None = None,
) -> ImageArray:
    """Decode every image under a folder, or read the result cached by an earlier call.

    Files ending in .jpg, .jpeg, .png or .webp (any case) are found recursively and taken in
    sorted order of their path relative to ``root``. Symbolic links to files are followed,
    but links to folders are not. Each image gets a centre square crop, is converted to RGB or
    greyscale and is resized to ``image_size`` with Lanczos filtering. EXIF orientation is
    applied first.

    A file that cannot be decoded is recorded in ``skipped`` with the error, and a warning
    lists the first few. The decoded array is cached under ``cache_dir`` and keyed by the
    folder, the name, size and modification time of every file, and the decoding settings,
    so adding, removing or changing a file decodes the folder again.

    Parameters
    ----------
    root
        Folder to search.
    image_size
        Side of the square output images in pixels.
    channels
        3 for RGB, 1 for greyscale. Alpha is dropped.
    center_crop
        Side of the centre square, in source pixels, cut before resizing. None cuts the
        largest centre square (the shorter side). ``"auto"`` cuts 178 pixels, CelebA's usual
        crop, from files inside a folder named ``img_align_celeba`` and behaves as None for
        other files. An image smaller than the crop is cut to its shorter side.
    cache_dir
        Cache folder, or None for :func:`default_cache_dir`. The arrays go in its ``images``
        subfolder.
    max_images
        Keep the first ``max_images`` images that decode. Files after those are not decoded.
    progress
        Called as ``progress(done, total)`` during decoding, where ``done`` counts the files
        tried so far and ``total`` the files that will be tried. ``total`` grows by one for
        each skipped file while ``max_images`` is not yet reached.

    Returns
    -------
    ImageArray
        The images, named after the folder, with the absolute path of each.

    Raises
    ------
    DatasetNotFoundError
        If ``root`` does not exist, is not a folder or contains no image files.
    DatasetFormatError
        If no image file decodes.
    """
    _check_output_shape(image_size, channels, max_images)
    if center_crop is not None and center_crop != "auto":
        if isinstance(center_crop, bool) or not isinstance(center_crop, int) or center_crop <= 0:
            raise ValueError(f"center_crop must be a positive int, 'auto' or None, got {center_crop!r}")

    root = Path(root).expanduser().absolute()
    if not root.exists():
        raise DatasetNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} is not a folder")

    files, unreadable = _list_image_files(root, center_crop)
    if not files and not unreadable:
        raise DatasetNotFoundError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {root}"
        )

    name = root.resolve().name or "images"
    settings = {
        "format": _CACHE_FORMAT,
        "source": "folder",
        "root": str(root.resolve()),
        "image_size": image_size,
        "channels": channels,
        "center_crop": center_crop,
        "max_images": max_images,
        "resample": _RESAMPLE.name,
    }
    cache = _FolderCache(
        Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(),
        name,
        settings,
        files,
        unreadable,
    )

    cached = cache.read(image_size, channels)
    if cached is not None:
        images, relative_paths, relative_skipped = cached
        logger.info(
            "read %d decoded images of %s from the cache %s", len(images), root, cache.array_path
        )
    else:
        images, relative_paths, relative_skipped = _decode_files(
            root, files, image_size, channels, max_images, progress
        )
        relative_skipped = unreadable + relative_skipped
        if len(images) > 0:
            cache.write(images, relative_paths, relative_skipped)

    skipped = [(str(root / path), reason) for path, reason in relative_skipped]
    if skipped:
        _warn_skipped(root, skipped, len(files) + len(unreadable))
    if len(images) == 0:
        first = "; ".join(f"{path}: {reason}" for path, reason in skipped[:_LISTED_SKIPS])
        raise DatasetFormatError(
            f"none of the {len(skipped)} image files under {root} could be decoded: {first}"
        )
    paths = [str(root / path) for path in relative_paths]
    return ImageArray(images, name=name, paths=paths, skipped=skipped)


def _warn_skipped(root: Path, skipped: Sequence[tuple[str, str]], total: int) -> None:
    listed = "; ".join(f"{path} ({reason})" for path, reason in skipped[:_LISTED_SKIPS])
    more = f"; and {len(skipped) - _LISTED_SKIPS} more" if len(skipped) > _LISTED_SKIPS else ""
    logger.warning(
        "skipped %d of %d image files under %s that could not be read: %s%s",
        len(skipped), total, root, listed, more,
    )


def _is_celeba_path(parts: Sequence[str]) -> bool:
    return any(part.lower() == _CELEBA_FOLDER_NAME for part in parts)


def _list_image_files(
    root: Path, center_crop: int | Literal["auto"] | None
) -> tuple[list[_ImageFile], list[tuple[str, str]]]:
    """Return the image files under ``root`` sorted by relative path, and those ``stat`` failed on."""

    def report_listing_error(error: OSError) -> None:
        logger.warning("cannot list folder %s, so its images are missing: %s", error.filename, error)

    # Both spellings of the root count for CelebA detection, in case one of them is a link.
    root_parts = root.parts + root.resolve().parts
    found: list[_ImageFile] = []
    unreadable: list[tuple[str, str]] = []
    for folder, subfolders, names in os.walk(root, onerror=report_listing_error):
        subfolders.sort()
        for file_name in names:
            if os.path.splitext(file_name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            full_path = Path(folder) / file_name
            relative_path = full_path.relative_to(root).as_posix()
            try:
                status = full_path.stat()
            except OSError as error:
                unreadable.append((relative_path, f"{type(error).__name__}: {error}"))
                continue
            if center_crop == "auto":
                in_celeba = _is_celeba_path(root_parts + tuple(relative_path.split("/")[:-1]))
                crop = _CELEBA_CROP if in_celeba else None
            else:
                crop = center_crop
            found.append(_ImageFile(relative_path, status.st_size, status.st_mtime_ns, crop))
    found.sort(key=lambda entry: entry.relative_path)
    unreadable.sort()
    return found, unreadable


def _decode_files(
    root: Path,
    files: Sequence[_ImageFile],
    image_size: int,
    channels: int,
    max_images: int | None,
    progress: ProgressCallback | None,
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Decode files in order until ``max_images`` images decode or the files run out.

    Returns the images, the relative path of each and the ``(relative path, error)`` of every
    file that failed.
    """
    target = len(files) if max_images is None else min(max_images, len(files))
    mode = "RGB" if channels == 3 else "L"
    images = np.empty((target, image_size, image_size, channels), dtype=np.uint8)
    decoded_paths: list[str] = []
    skipped: list[tuple[str, str]] = []
    started = time.perf_counter()
    logger.info("decoding %d image files under %s", target, root)

    def decode(entry: _ImageFile) -> tuple[np.ndarray | None, str | None]:
        return _try_decode_image(root / entry.relative_path, image_size, mode, entry.crop)

    next_file = 0
    threads = min(_MAX_DECODE_THREADS, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mdgan-decode") as pool:
        while len(decoded_paths) < target and next_file < len(files):
            # A block never contains more files than images still missing, so with max_images
            # only the files needed are decoded.
            block_size = min(_DECODE_BLOCK, target - len(decoded_paths))
            block = files[next_file : next_file + block_size]
            next_file += len(block)
            for entry, (pixels, error) in zip(block, pool.map(decode, block)):
                if pixels is None:
                    skipped.append((entry.relative_path, error or "unknown error"))
                    continue
                images[len(decoded_paths)] = pixels
                decoded_paths.append(entry.relative_path)
            if progress is not None:
                progress(next_file, min(len(files), target + len(skipped)))

    if len(decoded_paths) < target:
        # No other reference to the array exists, so it can shrink in place without a copy.
        images.resize((len(decoded_paths), image_size, image_size, channels), refcheck=False)
    logger.info(
        "decoded %d images (%d skipped) under %s in %.1f s",
        len(decoded_paths), len(skipped), root, time.perf_counter() - started,
    )
    return images, decoded_paths, skipped


def _try_decode_image(
    path: Path, image_size: int, mode: str, crop: int | None
) -> tuple[np.ndarray | None, str | None]:
    try:
        return _decode_image(path, image_size, mode, crop), None
    except _DECODE_ERRORS as error:
        return None, f"{type(error).__name__}: {error}"


def _decode_image(path: Path, image_size: int, mode: str, crop: int | None) -> np.ndarray:
    """Decode one file into ``uint8 [size, size, channels]``: centre square crop, then resize."""
    with Image.open(path) as image:
        source_width, source_height = image.size
        crop_side = min(source_width, source_height)
        if crop is not None:
            crop_side = min(crop, crop_side)

        # Let the JPEG decoder shrink by 2, 4 or 8 while the crop keeps at least
        # _DRAFT_REDUCING_GAP times the target size. Other formats ignore draft().
        shrink = image_size * _DRAFT_REDUCING_GAP / crop_side
        drafted = image.draft(
            mode, (math.ceil(source_width * shrink), math.ceil(source_height * shrink))
        )
        scale = drafted[1][2] / source_width if drafted is not None else 1.0

        ImageOps.exif_transpose(image, in_place=True)
        width, height = image.size
        side = max(1, min(round(crop_side * scale), width, height))
        left = (width - side) // 2
        top = (height - side) // 2
        # Cropping before resizing keeps pixels outside the square out of the filter's reach.
        square = _convert_mode(image.crop((left, top, left + side, top + side)), mode)
        if side != image_size:
            square = square.resize((image_size, image_size), _RESAMPLE)
        pixels = np.asarray(square, dtype=np.uint8)
    return pixels.reshape(image_size, image_size, -1)


def _convert_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to ``mode``, scaling 16-bit greyscale down to 8 bits where Pillow would clip it."""
    if image.mode.startswith("I;16"):
        # Pillow's I;16 -> L conversion clips values above 255 instead of scaling them.
        high_bytes = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        image = Image.fromarray(high_bytes)
    # NOTE: 32-bit integer ("I") and float ("F") images are still clipped to [0, 255] by
    # Pillow's conversion. Photo folders rarely contain them.
    if image.mode != mode:
        image = image.convert(mode)
    return image


# --------------------------------------------------------------------------------------------
# Cache of decoded folders


class _FolderCache:
    """The ``.npy`` array and ``.json`` index of one decoded folder under the cache directory.

    The file names contain two digests: one of the decoding settings and folder, and one of the
    settings plus every file's path, size and modification time. A new entry removes entries
    with the same settings digest, which a change to the files has made stale.
    """

    def __init__(
        self,
        cache_dir: Path,
        name: str,
        settings: dict[str, Any],
        files: Sequence[_ImageFile],
        unreadable: Sequence[tuple[str, str]],
    ) -> None:
        settings_json = json.dumps(settings, sort_keys=True)
        settings_digest = hashlib.sha256(settings_json.encode()).hexdigest()
        content = hashlib.sha256(settings_json.encode())
        for entry in files:
            line = f"\0{entry.relative_path}\0{entry.size}\0{entry.mtime_ns}\0{entry.crop}"
            content.update(line.encode())
        for relative_path, _ in unreadable:
            content.update(f"\0{relative_path}\0unreadable".encode())

        self.folder = cache_dir / _CACHE_SUBDIR
        self.content_key = content.hexdigest()
        self.settings = settings
        self.prefix = f"{re.sub(r'[^A-Za-z0-9._-]', '_', name)}-{settings_digest[:12]}-"
        stem = self.prefix + self.content_key[:16]
        self.array_path = self.folder / f"{stem}.npy"
        self.index_path = self.folder / f"{stem}.json"

    def read(
        self, image_size: int, channels: int
    ) -> tuple[np.ndarray, list[str], list[tuple[str, str]]] | None:
        """Return ``(images, relative paths, skipped)`` from the cache, or None on a miss."""
        if not self.index_path.is_file() or not self.array_path.is_file():
            return None
        try:
            index = json.loads(self.index_path.read_text(encoding="utf-8"))
            if index.get("format") != _CACHE_FORMAT or index.get("content_key") != self.content_key:
                raise ValueError("its key does not match the files")
            relative_paths = [str(path) for path in index["paths"]]
            skipped = [(str(path), str(reason)) for path, reason in index["skipped"]]
            images = np.load(self.array_path, allow_pickle=False)
            expected_shape = (len(relative_paths), image_size, image_size, channels)
            if images.dtype != np.uint8 or images.shape != expected_shape:
                raise ValueError(
                    f"array is {images.dtype} {images.shape}, expected uint8 {expected_shape}"
                )
        except (OSError, EOFError, ValueError, KeyError, TypeError) as error:
            logger.warning(
                "ignoring unreadable cache entry %s and decoding again: %s", self.array_path, error
            )
            return None
        return images, relative_paths, skipped

    def write(
        self, images: np.ndarray, relative_paths: list[str], skipped: list[tuple[str, str]]
    ) -> None:
        """Store a decoded folder. A write error is logged, not raised, because the images are usable."""
        index = {
            "format": _CACHE_FORMAT,
            "content_key": self.content_key,
            "settings": self.settings,
            "shape": list(images.shape),
            "paths": relative_paths,
            "skipped": [list(item) for item in skipped],
        }
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # The index goes last, because a read needs both files and checks the index first.
            index_bytes = json.dumps(index).encode("utf-8")
            _write_atomically(
                self.array_path, lambda stream: np.save(stream, images, allow_pickle=False)
            )
            _write_atomically(self.index_path, lambda stream: stream.write(index_bytes))
        except OSError as error:
            logger.warning(
                "cannot write the image cache %s, so the next load decodes again: %s",
                self.array_path,
                error,
            )
            return
        logger.info("cached %d decoded images in %s", len(images), self.array_path)
        self._remove_stale_entries()

    def _remove_stale_entries(self) -> None:
        current = {self.array_path.name, self.index_path.name}
        # The prefix contains only letters, digits, '.', '_' and '-', so it has no glob wildcards.
        for path in self.folder.glob(f"{self.prefix}*"):
            if path.name in current or path.suffix not in (".npy", ".json"):
                continue
            try:
                path.unlink()
            except OSError as error:
                logger.warning("cannot remove stale cache file %s: %s", path, error)
            else:
                logger.info("removed stale cache file %s", path)


def _write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a file through a temporary file in the same folder, then rename it into place."""
    temporary_path = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open applies the umask to 0o666, unlike tempfile.mkstemp, which always uses 0o600.
    descriptor = os.open(temporary_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    renamed = False
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
        os.replace(temporary_path, path)
        renamed = True
    finally:
        if not renamed:
            with contextlib.suppress(OSError):
                os.unlink(temporary_path)
