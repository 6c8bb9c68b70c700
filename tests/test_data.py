"""Tests of mdgan.data on the Debian Fashion-MNIST files and on small image folders built here."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data
from skimage.transform import downscale_local_mean

from mdgan.data import (
    DEBIAN_FASHION_MNIST_DIR,
    DatasetFormatError,
    DatasetNotFoundError,
    ImageArray,
    default_cache_dir,
    load_dataset,
    load_fashion_mnist,
    load_image_folder,
)

needs_debian_fashion_mnist = pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"{DEBIAN_FASHION_MNIST_DIR} is missing: install the Debian package dataset-fashion-mnist",
)

# Mean pixel value of the 60,000 Fashion-MNIST training images on a [0, 1] scale, the value
# widely quoted as the mean for normalising this dataset.
FASHION_MNIST_TRAIN_MEAN = 0.2860

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def fashion_mnist(**overrides) -> ImageArray:
    arguments = dict(
        root=None, split="test", image_size=32, channels=1, download=False, cache_dir=None, max_images=64
    )
    arguments.update(overrides)
    return load_fashion_mnist(**arguments)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Folder of 8 decodable images in nested subfolders, one corrupt .jpg and one text file."""
    root = tmp_path / "photos"
    (root / "faces" / "a").mkdir(parents=True)
    (root / "faces" / "b").mkdir(parents=True)

    Image.fromarray(skimage_data.astronaut()).save(root / "astronaut.png")
    faces = (skimage_data.lfw_subset()[:7] * 255).round().astype(np.uint8)
    for number, face in enumerate(faces[:3]):
        Image.fromarray(face).save(root / "faces" / "a" / f"face_{number}.jpg", quality=95)
    for number, face in enumerate(faces[3:6], start=3):
        Image.fromarray(face).save(root / "faces" / "b" / f"face_{number}.webp")
    Image.fromarray(faces[6]).save(root / "FACE_UPPER.PNG")

    rng = np.random.default_rng(0)
    (root / "broken.jpg").write_bytes(rng.integers(0, 256, size=2048, dtype=np.uint8).tobytes())
    (root / "notes.txt").write_text("not an image\n")
    return root


def load_folder(root: Path, cache_dir: Path, **overrides) -> ImageArray:
    arguments = dict(image_size=16, channels=3, center_crop="auto", max_images=None)
    arguments.update(overrides)
    return load_image_folder(root, cache_dir=cache_dir, **arguments)


def count_image_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Wrap PIL.Image.open to record the path of every file the loader opens."""
    opened: list[str] = []
    original_open = Image.open

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return original_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return opened


def save_bordered_image(
    path: Path, width: int, height: int, border_rows: int, border_columns: int
) -> None:
    """Save a blue image whose outer rows and columns are red."""
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = BLUE
    if border_rows:
        pixels[:border_rows] = RED
        pixels[-border_rows:] = RED
    if border_columns:
        pixels[:, :border_columns] = RED
        pixels[:, -border_columns:] = RED
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        # 4:4:4 chroma keeps the red rows from bleeding into the blue ones.
        Image.fromarray(pixels).save(path, quality=95, subsampling=0)
    else:
        Image.fromarray(pixels).save(path)


# --------------------------------------------------------------------------------------------
# Fashion-MNIST


@needs_debian_fashion_mnist
@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_fashion_mnist_shapes(image_size: int, channels: int) -> None:
    dataset = fashion_mnist(image_size=image_size, channels=channels, max_images=50)

    assert dataset.images.shape == (50, image_size, image_size, channels)
    assert dataset.images.dtype == np.uint8
    assert len(dataset) == 50
    assert dataset.image_size == image_size
    assert dataset.channels == channels
    assert dataset.name == "fashion-mnist-test"
    assert dataset.paths is None
    assert dataset.skipped == []


@needs_debian_fashion_mnist
def test_fashion_mnist_full_train_split() -> None:
    dataset = fashion_mnist(split="train", image_size=28, max_images=None)

    assert dataset.images.shape == (60000, 28, 28, 1)
    assert dataset.name == "fashion-mnist-train"
    assert dataset.images.mean() / 255 == pytest.approx(FASHION_MNIST_TRAIN_MEAN, abs=5e-4)


@needs_debian_fashion_mnist
def test_fashion_mnist_resize_keeps_brightness() -> None:
    native = fashion_mnist(image_size=28, max_images=500)
    resized = fashion_mnist(image_size=64, max_images=500)

    assert resized.images.mean() == pytest.approx(native.images.mean(), rel=0.02)


@needs_debian_fashion_mnist
def test_fashion_mnist_three_channels_repeat_grey() -> None:
    grey = fashion_mnist(channels=1, max_images=20)
    colour = fashion_mnist(channels=3, max_images=20)

    for channel in range(3):
        np.testing.assert_array_equal(colour.images[..., channel], grey.images[..., 0])


@needs_debian_fashion_mnist
def test_fashion_mnist_max_images_takes_first() -> None:
    first_ten = fashion_mnist(max_images=10)
    first_hundred = fashion_mnist(max_images=100)

    assert len(first_ten) == 10
    np.testing.assert_array_equal(first_ten.images, first_hundred.images[:10])


@needs_debian_fashion_mnist
@pytest.mark.parametrize("channels", [1, 3])
def test_getitem_scales_to_unit_range(channels: int) -> None:
    dataset = fashion_mnist(channels=channels, max_images=100)

    image, index = dataset[7]

    assert index == 7
    assert image.dtype == torch.float32
    assert image.shape == (channels, 32, 32)
    assert image.min() >= -1.0
    assert image.max() <= 1.0
    expected = torch.from_numpy(dataset.images[7]).permute(2, 0, 1).float() / 127.5 - 1.0
    torch.testing.assert_close(image, expected)


@needs_debian_fashion_mnist
@pytest.mark.parametrize("channels", [1, 3])
def test_batch_equals_stacked_items(channels: int) -> None:
    dataset = fashion_mnist(channels=channels, max_images=100)
    indices = np.array([3, 0, 99, 3, 42])

    batch = dataset.batch(indices)
    stacked = torch.stack([dataset[int(i)][0] for i in indices])

    assert batch.shape == (5, channels, 32, 32)
    assert batch.dtype == torch.float32
    assert batch.is_contiguous()
    assert torch.equal(batch, stacked)
    assert torch.equal(dataset.batch(torch.from_numpy(indices)), batch)
    assert torch.equal(dataset.batch(indices.astype(np.int32)), batch)


@needs_debian_fashion_mnist
def test_batch_reaches_both_ends_of_range() -> None:
    dataset = fashion_mnist(image_size=28, max_images=100)

    batch = dataset.batch(np.arange(100))

    assert batch.min().item() == -1.0
    assert batch.max().item() == 1.0


@needs_debian_fashion_mnist
def test_batch_rejects_bad_indices() -> None:
    dataset = fashion_mnist(max_images=10)

    with pytest.raises(TypeError, match="integers"):
        dataset.batch(torch.tensor([0.0, 1.0]))
    with pytest.raises(IndexError):
        dataset.batch(np.array([10]))
    with pytest.raises(ValueError, match="one-dimensional"):
        dataset.batch(np.zeros((2, 2), dtype=np.int64))
    assert dataset.batch(np.array([], dtype=np.int64)).shape == (0, 1, 32, 32)


@needs_debian_fashion_mnist
def test_getitem_index_bounds() -> None:
    dataset = fashion_mnist(max_images=10)

    image, index = dataset[-1]

    assert index == 9
    assert torch.equal(image, dataset[9][0])
    with pytest.raises(IndexError, match="out of range"):
        dataset[10]
    with pytest.raises(IndexError, match="out of range"):
        dataset[-11]


@needs_debian_fashion_mnist
def test_dataloader_yields_images_and_indices() -> None:
    dataset = fashion_mnist(max_images=10)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False)

    images, indices = next(iter(loader))

    assert images.shape == (4, 1, 32, 32)
    assert indices.tolist() == [0, 1, 2, 3]
    assert torch.equal(images, dataset.batch(indices))


@needs_debian_fashion_mnist
def test_fashion_mnist_explicit_root(tmp_path: Path) -> None:
    shutil.copy(DEBIAN_FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz", tmp_path)

    from_root = fashion_mnist(root=tmp_path, max_images=30)
    from_debian = fashion_mnist(max_images=30)

    np.testing.assert_array_equal(from_root.images, from_debian.images)


def write_idx_file(path: Path, magic: int, count: int, pixels: bytes) -> None:
    with gzip.open(path, "wb") as stream:
        stream.write(struct.pack(">IIII", magic, count, 28, 28) + pixels)


def test_fashion_mnist_reads_unpacked_idx(tmp_path: Path) -> None:
    pixels = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8)
    header = struct.pack(">IIII", 0x803, 2, 28, 28)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(header + pixels.tobytes())

    dataset = fashion_mnist(root=tmp_path, image_size=28)

    np.testing.assert_array_equal(dataset.images[..., 0], pixels.reshape(2, 28, 28))


def test_fashion_mnist_bad_magic_names_file(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    write_idx_file(path, magic=0x801, count=1, pixels=bytes(28 * 28))

    with pytest.raises(DatasetFormatError, match="magic number") as error:
        fashion_mnist(root=tmp_path)

    assert str(path) in str(error.value)


def test_fashion_mnist_truncated_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    write_idx_file(path, magic=0x803, count=3, pixels=bytes(28 * 28))

    with pytest.raises(DatasetFormatError, match="3 images") as error:
        fashion_mnist(root=tmp_path)

    assert str(path) in str(error.value)


def test_fashion_mnist_not_gzip_names_file(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(b"this is not gzip data")

    with pytest.raises(DatasetFormatError) as error:
        fashion_mnist(root=tmp_path)

    assert str(path) in str(error.value)


@pytest.mark.parametrize("download", [False, True])
def test_fashion_mnist_missing_root_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, download: bool
) -> None:
    import torchvision.datasets

    def fail_download(*args, **kwargs):
        raise AssertionError("an explicit root must not start a download")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fail_download)
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(DatasetNotFoundError) as error:
        fashion_mnist(root=empty, download=download, cache_dir=tmp_path / "cache")

    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert "data.path" in message
    assert "dataset-fashion-mnist" in message
    assert str(empty / "t10k-images-idx3-ubyte.gz") in message


def test_fashion_mnist_rejects_unknown_split() -> None:
    with pytest.raises(ValueError, match="split"):
        fashion_mnist(split="validation")


# --------------------------------------------------------------------------------------------
# Image folders


def test_folder_loads_decodable_images(
    image_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mdgan.data"):
        dataset = load_folder(image_folder, tmp_path / "cache")

    assert len(dataset) == 8
    assert dataset.images.shape == (8, 16, 16, 3)
    assert dataset.images.dtype == np.uint8
    assert dataset.name == "photos"
    assert dataset.paths is not None
    relative_paths = [Path(path).relative_to(image_folder).as_posix() for path in dataset.paths]
    assert relative_paths == sorted(relative_paths)
    assert all(Path(path).is_absolute() and Path(path).is_file() for path in dataset.paths)
    assert str(image_folder / "faces" / "b" / "face_5.webp") in dataset.paths
    assert str(image_folder / "FACE_UPPER.PNG") in dataset.paths
    assert not any(path.endswith("notes.txt") for path in dataset.paths)

    broken = str(image_folder / "broken.jpg")
    assert [path for path, _ in dataset.skipped] == [broken]
    assert dataset.skipped[0][1] != ""
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert broken in warnings[0].getMessage()
    assert "skipped 1 of 9" in warnings[0].getMessage()


def test_folder_greyscale(image_folder: Path, tmp_path: Path) -> None:
    dataset = load_folder(image_folder, tmp_path / "cache", channels=1, image_size=24)

    assert dataset.images.shape == (8, 24, 24, 1)
    assert dataset.batch(np.arange(8)).shape == (8, 1, 24, 24)


def test_folder_astronaut_matches_reference_resize(image_folder: Path, tmp_path: Path) -> None:
    dataset = load_folder(image_folder, tmp_path / "cache", image_size=32)
    position = dataset.paths.index(str(image_folder / "astronaut.png"))

    # 512 / 32 = 16, so the mean of each 16x16 block is a filter-independent reference. Lanczos
    # differs from it by about 4 levels, and a transposed, flipped or BGR image by 30 or more.
    reference = downscale_local_mean(skimage_data.astronaut(), (16, 16, 1))
    difference = np.abs(dataset.images[position].astype(np.float64) - reference)

    assert difference.mean() < 8.0


def test_folder_max_images_replaces_skipped(image_folder: Path, tmp_path: Path) -> None:
    # In sorted order broken.jpg comes third, after FACE_UPPER.PNG and astronaut.png.
    dataset = load_folder(image_folder, tmp_path / "cache", max_images=3)

    assert len(dataset) == 3
    assert dataset.paths == [
        str(image_folder / "FACE_UPPER.PNG"),
        str(image_folder / "astronaut.png"),
        str(image_folder / "faces" / "a" / "face_0.jpg"),
    ]
    assert [path for path, _ in dataset.skipped] == [str(image_folder / "broken.jpg")]


def test_folder_reports_progress(image_folder: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []

    def record(done: int, total: int) -> None:
        calls.append((done, total))

    load_folder(image_folder, tmp_path / "cache", progress=record)

    assert calls
    assert calls[-1] == (9, 9)
    assert all(0 < done <= total for done, total in calls)


def test_folder_without_decodable_images(tmp_path: Path) -> None:
    root = tmp_path / "only_broken"
    root.mkdir()
    (root / "broken.png").write_bytes(b"\x89PNG but not really")

    with pytest.raises(DatasetFormatError) as error:
        load_folder(root, tmp_path / "cache")

    assert str(root) in str(error.value)
    assert "broken.png" in str(error.value)


def test_empty_folder_raises(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    (root / "readme.txt").write_text("no images here\n")

    with pytest.raises(DatasetNotFoundError, match="no image files") as error:
        load_folder(root, tmp_path / "cache")

    assert str(root) in str(error.value)


def test_missing_folder_raises(tmp_path: Path) -> None:
    root = tmp_path / "does-not-exist"

    with pytest.raises(DatasetNotFoundError, match="not found") as error:
        load_folder(root, tmp_path / "cache")

    assert str(root) in str(error.value)


def test_file_as_folder_raises(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    Image.new("RGB", (8, 8)).save(path)

    with pytest.raises(DatasetNotFoundError, match="not a folder"):
        load_folder(path, tmp_path / "cache")


def test_folder_rejects_bad_crop(image_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="center_crop"):
        load_folder(image_folder, tmp_path / "cache", center_crop=0)


# --------------------------------------------------------------------------------------------
# Centre crops


def red_level(dataset: ImageArray) -> float:
    """Largest excess of red over blue in any pixel, on the 0-255 scale."""
    pixels = dataset.images.astype(np.int32)
    return float((pixels[..., 0] - pixels[..., 2]).max())


@pytest.mark.parametrize("folder", ["celeba/img_align_celeba", "celeba"])
def test_celeba_auto_crop_removes_bands(tmp_path: Path, folder: str) -> None:
    # Aligned CelebA images are 178x218. Here the 20 rows above and below the centre square are red.
    save_bordered_image(tmp_path / "celeba" / "img_align_celeba" / "000001.jpg", 178, 218, 20, 0)

    dataset = load_folder(tmp_path / folder, tmp_path / "cache", image_size=32, center_crop="auto")

    assert len(dataset) == 1
    assert red_level(dataset) < -150


def test_celeba_auto_crop_is_178_pixels(tmp_path: Path) -> None:
    # A 300x300 image has a red frame around the centre 178x178 square. The shorter-side crop
    # keeps the frame, and only the CelebA crop removes it.
    margin = (300 - 178) // 2
    save_bordered_image(tmp_path / "img_align_celeba" / "big.png", 300, 300, margin, margin)
    save_bordered_image(tmp_path / "other" / "big.png", 300, 300, margin, margin)

    celeba = load_folder(tmp_path / "img_align_celeba", tmp_path / "cache", image_size=32)
    other = load_folder(tmp_path / "other", tmp_path / "cache", image_size=32)

    assert red_level(celeba) < -150
    assert red_level(other) > 150


def test_integer_crop_cuts_centre_square(tmp_path: Path) -> None:
    save_bordered_image(tmp_path / "frames" / "frame.png", 178, 218, 59, 39)

    cropped = load_folder(tmp_path / "frames", tmp_path / "cache", image_size=32, center_crop=100)
    shorter_side = load_folder(tmp_path / "frames", tmp_path / "cache", image_size=32, center_crop=None)

    assert red_level(cropped) < -150
    assert red_level(shorter_side) > 150


def test_shorter_side_crop_keeps_aspect(tmp_path: Path) -> None:
    # A wide image: left half red, right half blue. A square centre crop keeps both halves equal.
    pixels = np.zeros((50, 200, 3), dtype=np.uint8)
    pixels[:, :100] = RED
    pixels[:, 100:] = BLUE
    (tmp_path / "wide").mkdir()
    Image.fromarray(pixels).save(tmp_path / "wide" / "wide.png")

    dataset = load_folder(tmp_path / "wide", tmp_path / "cache", image_size=10, center_crop=None)

    image = dataset.images[0].astype(np.int32)
    assert (image[:, :4, 0] > 200).all()
    assert (image[:, -4:, 2] > 200).all()


def test_folder_applies_exif_orientation(tmp_path: Path) -> None:
    # The stored image has a red left half and a blue right half. Orientation 6 means it is
    # shown rotated 90 degrees clockwise, which moves the red half to the top.
    pixels = np.zeros((40, 40, 3), dtype=np.uint8)
    pixels[:, :20] = RED
    pixels[:, 20:] = BLUE
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    (tmp_path / "rotated").mkdir()
    image.save(tmp_path / "rotated" / "photo.jpg", quality=95, subsampling=0, exif=exif)

    dataset = load_folder(tmp_path / "rotated", tmp_path / "cache", image_size=8)

    decoded = dataset.images[0].astype(np.int32)
    assert (decoded[:3, :, 0] > 200).all()
    assert (decoded[-3:, :, 2] > 200).all()


def test_folder_scales_16_bit_greyscale(tmp_path: Path) -> None:
    (tmp_path / "deep").mkdir()
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(tmp_path / "deep" / "flat.png")

    dataset = load_folder(tmp_path / "deep", tmp_path / "cache", image_size=8, channels=1)

    # 40000 / 256 = 156.25, where a plain conversion would clip to 255.
    assert (dataset.images == 156).all()


# --------------------------------------------------------------------------------------------
# Cache


def cached_arrays(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.rglob("*.npy"))


def test_cache_second_load_skips_decoding(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    first = load_folder(image_folder, cache_dir)

    def fail_open(*args, **kwargs):
        raise AssertionError("a cached folder must not be decoded again")

    monkeypatch.setattr(Image, "open", fail_open)
    second = load_folder(image_folder, cache_dir)

    np.testing.assert_array_equal(second.images, first.images)
    assert second.paths == first.paths
    assert second.skipped == first.skipped
    assert second.name == first.name
    assert len(cached_arrays(cache_dir)) == 1
    assert len(sorted(cache_dir.rglob("*.json"))) == 1
    assert not list(cache_dir.rglob("*.tmp"))


def test_cache_logs_skipped_again(
    image_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    load_folder(image_folder, tmp_path / "cache")

    with caplog.at_level(logging.WARNING, logger="mdgan.data"):
        load_folder(image_folder, tmp_path / "cache")

    assert str(image_folder / "broken.jpg") in caplog.text


def test_cache_rebuilds_after_touch(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    first = load_folder(image_folder, cache_dir)
    touched = image_folder / "faces" / "a" / "face_1.jpg"
    status = touched.stat()
    os.utime(touched, ns=(status.st_atime_ns, status.st_mtime_ns + 5_000_000_000))

    opened = count_image_opens(monkeypatch)
    second = load_folder(image_folder, cache_dir)

    assert str(touched) in opened
    np.testing.assert_array_equal(second.images, first.images)
    assert len(cached_arrays(cache_dir)) == 1


def test_cache_rebuilds_after_file_changes(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    first = load_folder(image_folder, cache_dir)
    added = image_folder / "faces" / "b" / "new.png"
    Image.new("RGB", (20, 20), color=(10, 200, 30)).save(added)

    opened = count_image_opens(monkeypatch)
    with_added = load_folder(image_folder, cache_dir)

    assert opened
    assert len(with_added) == len(first) + 1
    assert str(added) in with_added.paths

    added.unlink()
    without_added = load_folder(image_folder, cache_dir)

    assert without_added.paths == first.paths
    np.testing.assert_array_equal(without_added.images, first.images)


def test_cache_keeps_one_entry_per_setting(image_folder: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"

    small = load_folder(image_folder, cache_dir, image_size=16)
    large = load_folder(image_folder, cache_dir, image_size=32)
    grey = load_folder(image_folder, cache_dir, image_size=16, channels=1)

    assert small.image_size == 16
    assert large.image_size == 32
    assert grey.channels == 1
    assert len(cached_arrays(cache_dir)) == 3


def test_cache_ignores_corrupt_entry(
    image_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache_dir = tmp_path / "cache"
    first = load_folder(image_folder, cache_dir)
    [array_path] = cached_arrays(cache_dir)
    array_path.write_bytes(b"not a numpy file")

    with caplog.at_level(logging.WARNING, logger="mdgan.data"):
        second = load_folder(image_folder, cache_dir)

    np.testing.assert_array_equal(second.images, first.images)
    assert "cache" in caplog.text
    assert np.load(array_path).shape == first.images.shape


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MDGAN_CACHE_DIR", str(tmp_path / "custom"))
    assert default_cache_dir() == tmp_path / "custom"

    monkeypatch.delenv("MDGAN_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "mdgan"


# --------------------------------------------------------------------------------------------
# ImageArray and load_dataset


def test_image_array_validates_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ImageArray(np.zeros((2, 8, 8, 3), dtype=np.float32), name="floats")
    with pytest.raises(ValueError, match="square"):
        ImageArray(np.zeros((2, 8, 6, 3), dtype=np.uint8), name="wide")
    with pytest.raises(ValueError, match="channels"):
        ImageArray(np.zeros((2, 8, 8, 2), dtype=np.uint8), name="two channels")
    with pytest.raises(ValueError, match="paths"):
        ImageArray(np.zeros((2, 8, 8, 3), dtype=np.uint8), name="short", paths=["a.png"])


def test_load_dataset_folder_defaults_to_rgb(image_folder: Path, tmp_path: Path) -> None:
    from mdgan.config import DataConfig

    config = DataConfig(source="folder", path=image_folder, image_size=32, cache_dir=tmp_path / "cache")
    calls: list[tuple[int, int]] = []

    dataset = load_dataset(config, progress=lambda done, total: calls.append((done, total)))

    assert dataset.images.shape == (8, 32, 32, 3)
    assert calls[-1] == (9, 9)


@needs_debian_fashion_mnist
def test_load_dataset_fashion_mnist_defaults_to_grey(tmp_path: Path) -> None:
    from mdgan.config import DataConfig

    config = DataConfig(split="test", image_size=64, max_images=12, download=False, cache_dir=tmp_path)

    dataset = load_dataset(config)

    assert dataset.images.shape == (12, 64, 64, 1)
    assert dataset.name == "fashion-mnist-test"
