from pathlib import Path

import numpy as np
import pytest
import torch

from mdgan.data import DEBIAN_FASHION_MNIST_DIR, ImageArray, load_fashion_mnist

FASHION_MNIST_MISSING = not (Path(DEBIAN_FASHION_MNIST_DIR) / "train-images-idx3-ubyte.gz").is_file()
needs_fashion_mnist = pytest.mark.skipif(
    FASHION_MNIST_MISSING,
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist",
)


@pytest.fixture(scope="session")
def fashion_small() -> ImageArray:
    """The first 512 Fashion-MNIST training images at 32x32, one channel."""
    if FASHION_MNIST_MISSING:
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    return load_fashion_mnist(None, "train", 32, 1, download=False, cache_dir=None, max_images=512)


@pytest.fixture(scope="session")
def random_images() -> ImageArray:
    """128 random 32x32 grey images, for tests that need no real data."""
    rng = np.random.default_rng(0)
    return ImageArray(rng.integers(0, 256, size=(128, 32, 32, 1), dtype=np.uint8), name="random")


# A real open_clip architecture that is small enough for CI; its weights are random.
CLIP_ARCHITECTURE = "ViT-S-32"


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory):
    """Random ViT-S-32 weights saved to a local file, and the model they came from."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model(CLIP_ARCHITECTURE, pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "vit-s-32-random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


@pytest.fixture(scope="session")
def lfw_folder(tmp_path_factory):
    """scikit-image's 100 LFW faces (25x25 grey) as PNG files in nested folders."""
    from PIL import Image
    from skimage.data import lfw_subset

    root = tmp_path_factory.mktemp("lfw")
    for index, face in enumerate(lfw_subset()[:100]):  # the first 100 of the 200 are faces
        folder = root / f"person_{index % 5}"
        folder.mkdir(exist_ok=True)
        Image.fromarray((face * 255).astype(np.uint8)).save(folder / f"{index:03d}.png")
    return root
