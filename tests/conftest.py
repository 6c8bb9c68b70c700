from pathlib import Path

import numpy as np
import pytest

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
