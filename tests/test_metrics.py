import itertools

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors import safe_open

from conftest import needs_fashion_mnist
from mdgan.data import ImageArray, load_fashion_mnist, load_fashion_mnist_labels
from mdgan.embedders import PixelEmbedder
from mdgan.fmnist_classifier import (
    ClassifierWeightsNotFoundError,
    classifier_accuracy,
    dataset_tensors,
    find_classifier_weights,
    load_fashion_classifier,
    train_fashion_classifier,
)
from mdgan.inception import (
    INCEPTION_FILE_NAMES,
    InceptionFeatures,
    InceptionWeightsNotFoundError,
    find_inception_weights,
)
from mdgan.metrics import (
    FeatureSpace,
    StreamingMoments,
    class_coverage,
    feature_statistics,
    format_count,
    frechet_distance,
    kid,
    metric_name,
    mmd2_unbiased,
    real_statistics,
)


def random_covariance(rng, dim):
    factor = rng.normal(size=(dim, dim))
    return factor @ factor.T / dim + 0.1 * np.eye(dim)


# ------------------------------------------------------------------ Fréchet distance


@pytest.mark.parametrize("count, dim", [(500, 16), (40, 64)])
def test_frechet_distance_of_sample_with_itself_is_zero(count, dim):
    features = np.random.default_rng(0).normal(size=(count, dim)) * 3 + 5
    mean, covariance = feature_statistics(features)
    assert abs(frechet_distance(mean, covariance, mean, covariance)) < 1e-6


def test_frechet_distance_equal_covariances_is_mean_gap():
    rng = np.random.default_rng(1)
    covariance = random_covariance(rng, 20)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    expected = float(((mu1 - mu2) ** 2).sum())
    assert frechet_distance(mu1, covariance, mu2, covariance) == pytest.approx(expected, rel=1e-9, abs=1e-6)


def scipy_frechet_distance(mu1, sigma1, mu2, sigma2):
    """The pytorch-fid formula with scipy's matrix square root of the product."""
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root.real))


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_frechet_distance_matches_scipy_sqrtm(seed):
    rng = np.random.default_rng(seed)
    first = rng.normal(size=(800, 24)) @ rng.normal(size=(24, 24))
    second = rng.normal(size=(600, 24)) @ rng.normal(size=(24, 24)) + rng.normal(size=24)
    mu1, sigma1 = feature_statistics(first)
    mu2, sigma2 = feature_statistics(second)
    expected = scipy_frechet_distance(mu1, sigma1, mu2, sigma2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_accepts_float32_tensors():
    rng = np.random.default_rng(5)
    first, second = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 1
    mu1, sigma1 = feature_statistics(torch.from_numpy(first).float())
    mu2, sigma2 = feature_statistics(second)
    assert mu1.dtype == np.float64
    expected = scipy_frechet_distance(*feature_statistics(first), mu2, sigma2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-5)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="covariances must both be"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


def test_streaming_moments_match_two_pass_covariance():
    rng = np.random.default_rng(6)
    # A mean far from zero is where the one-pass sum-of-squares formula loses digits.
    features = rng.normal(size=(1000, 5)) + 1e5
    moments = StreamingMoments(5)
    for start in range(0, 1000, 128):
        moments.update(features[start : start + 128])
    assert moments.count == 1000
    np.testing.assert_allclose(moments.mean, features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.covariance, np.cov(features, rowvar=False), rtol=1e-7)


# ------------------------------------------------------------------ KID


def brute_force_mmd2(x, y):
    """Unbiased MMD² with k(a, b) = (a.b / d + 1)^3, one kernel evaluation at a time."""
    def kernel(a, b):
        return (sum(p * q for p, q in zip(a, b)) / len(a) + 1) ** 3

    m, n = len(x), len(y)
    within_x = sum(kernel(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    within_y = sum(kernel(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    across = sum(kernel(a, b) for a in x for b in y) / (m * n)
    return within_x + within_y - 2 * across


def test_mmd2_matches_brute_force():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(9, 4)), rng.normal(size=(13, 4)) + 0.5
    assert mmd2_unbiased(x, y) == pytest.approx(brute_force_mmd2(x.tolist(), y.tolist()), rel=1e-10)


def test_mmd2_matches_torchmetrics():
    torchmetrics_kid = pytest.importorskip("torchmetrics.image.kid")
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(50, 6)), rng.normal(size=(50, 6)) + 0.3
    expected = float(torchmetrics_kid.poly_mmd(torch.from_numpy(x), torch.from_numpy(y)))
    assert mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-10)


def test_kid_equals_brute_force_mmd():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(10, 3)), rng.normal(size=(10, 3)) * 2
    # Subsets of all 10 rows are permutations, and MMD² does not depend on the order.
    mean, spread = kid(x, y, num_subsets=4, subset_size=10)
    assert mean == pytest.approx(brute_force_mmd2(x.tolist(), y.tolist()), rel=1e-10)
    assert spread == pytest.approx(0.0, abs=1e-12)


def test_kid_separates_shifted_distribution():
    rng = np.random.default_rng(9)
    real = rng.normal(size=(600, 8))
    same, _ = kid(real, rng.normal(size=(600, 8)), num_subsets=10, subset_size=200)
    shifted, _ = kid(real, rng.normal(size=(600, 8)) + 1, num_subsets=10, subset_size=200)
    assert abs(same) < 0.01
    assert shifted > 0.1


# ------------------------------------------------------------------ coverage


def test_coverage_of_identical_shares_is_zero():
    result = class_coverage([100, 200, 300, 400], [10, 20, 30, 40])
    assert result.total_variation == 0.0
    assert result.kl_divergence == 0.0
    assert result.dropped == ()


def test_coverage_reports_class_never_generated():
    result = class_coverage([100, 100, 100], [150, 0, 150])
    assert result.dropped == (1,)
    assert result.total_variation == pytest.approx(1 / 3)
    assert np.isfinite(result.kl_divergence)
    assert result.kl_divergence > 0.5
    assert result.generated_counts.tolist() == [150, 0, 150]


def test_coverage_dropped_threshold():
    # Class 1 should get a third of the images; 2% of all is under a tenth of that, 5% is not.
    assert class_coverage([1, 1, 1], [49, 2, 49]).dropped == (1,)
    assert class_coverage([1, 1, 1], [47, 5, 48]).dropped == ()


def test_coverage_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        class_coverage([1, 2], [1, 2, 3])


# ------------------------------------------------------------------ names


def test_metric_names_carry_space_and_count():
    assert metric_name("fd", "pixels", 5000) == "fd_pixels@5k"
    assert metric_name("fd", "inception", 50_000) == "fid_inception@50k"
    assert metric_name("kid", "clip-vit-b-32", 10_000) == "kid_clip-vit-b-32@10k"
    assert format_count(2500) == "2500"


def test_feature_space_rejects_name_with_underscore():
    with pytest.raises(ValueError, match="lower-case letters"):
        FeatureSpace("my_space", PixelEmbedder(4, 1))


# ------------------------------------------------------------------ real-statistics cache


class CountingPixels(torch.nn.Module):
    """Area-averaged pixels that count the images they embed."""

    def __init__(self, size=4):
        super().__init__()
        self.size = size
        self.register_buffer("scale", torch.ones(()))
        self.calls = 0

    def forward(self, images):
        self.calls += len(images)
        return torch.nn.functional.adaptive_avg_pool2d(images, self.size).flatten(1) * self.scale


def test_real_statistics_match_numpy(random_images, tmp_path):
    space = FeatureSpace("pixels", PixelEmbedder(4, 1))
    statistics = real_statistics(random_images, space, batch_size=50, cache_dir=tmp_path)
    features = PixelEmbedder(4, 1).embed_images(random_images.batch(np.arange(128))).double().numpy()
    np.testing.assert_allclose(statistics.mean, features.mean(axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(statistics.covariance, np.cov(features, rowvar=False), rtol=1e-5, atol=1e-9)
    assert statistics.count == 128
    assert statistics.kid_features.shape == (128, 16)


def test_real_statistics_cache_reused_when_unchanged(random_images, tmp_path):
    extractor = CountingPixels()
    first = real_statistics(random_images, FeatureSpace("pixels", extractor), cache_dir=tmp_path)
    assert not first.from_cache
    assert extractor.calls == 128

    second = real_statistics(random_images, FeatureSpace("pixels", extractor), cache_dir=tmp_path)
    assert second.from_cache
    assert extractor.calls == 128
    assert second.key == first.key
    np.testing.assert_array_equal(second.covariance, first.covariance)
    with safe_open(str(second.path), framework="pt") as handle:
        assert handle.metadata()["key"] == first.key
        assert handle.get_tensor("covariance").dtype == torch.float64


def test_real_statistics_cache_rebuilt_when_dataset_changes(random_images, tmp_path):
    extractor = CountingPixels()
    first = real_statistics(random_images, FeatureSpace("pixels", extractor), cache_dir=tmp_path)
    changed = random_images.images.copy()
    changed[0, 0, 0, 0] ^= 1
    changed_dataset = ImageArray(changed, name="random")
    second = real_statistics(changed_dataset, FeatureSpace("pixels", extractor), cache_dir=tmp_path)
    assert not second.from_cache
    assert second.key != first.key
    assert extractor.calls == 256


def test_real_statistics_cache_rebuilt_when_extractor_changes(random_images, tmp_path):
    extractor = CountingPixels()
    first = real_statistics(random_images, FeatureSpace("pixels", extractor), cache_dir=tmp_path)
    extractor.scale.fill_(2.0)  # other weights: the default description hashes the state dict
    second = real_statistics(random_images, FeatureSpace("pixels", extractor), cache_dir=tmp_path)
    assert not second.from_cache
    assert second.key != first.key
    np.testing.assert_allclose(second.covariance, 4 * first.covariance, rtol=1e-6)

    other_space = FeatureSpace("pixels", PixelEmbedder(8, 1))
    third = real_statistics(random_images, other_space, cache_dir=tmp_path)
    assert not third.from_cache
    assert third.mean.shape == (64,)


def test_real_statistics_cache_rebuilt_when_subset_changes(random_images, tmp_path):
    space = FeatureSpace("pixels", PixelEmbedder(4, 1))
    whole = real_statistics(random_images, space, cache_dir=tmp_path)
    subset = real_statistics(random_images, space, num_real=64, cache_dir=tmp_path)
    assert not subset.from_cache
    assert subset.count == 64
    assert subset.key != whole.key


def test_real_statistics_per_class(random_images, tmp_path):
    labels = np.arange(128) % 3
    space = FeatureSpace("pixels", PixelEmbedder(4, 1))
    statistics = real_statistics(random_images, space, cache_dir=tmp_path, labels=labels, num_classes=4)
    classes = statistics.classes
    assert classes.counts.tolist() == [43, 43, 42, 0]
    assert classes.means[3] is None
    images = random_images.batch(np.flatnonzero(labels == 1))
    features = PixelEmbedder(4, 1).embed_images(images).double().numpy()
    np.testing.assert_allclose(classes.covariances[1], np.cov(features, rowvar=False), rtol=1e-5, atol=1e-9)

    cached = real_statistics(random_images, space, cache_dir=tmp_path, labels=labels, num_classes=4)
    assert cached.from_cache
    np.testing.assert_array_equal(cached.classes.means[1], classes.means[1])
    other_labels = labels[::-1].copy()
    relabelled = real_statistics(random_images, space, cache_dir=tmp_path, labels=other_labels, num_classes=4)
    assert not relabelled.from_cache


# ------------------------------------------------------------------ Inception


@pytest.fixture
def empty_weight_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("MDGAN_CACHE_DIR", str(tmp_path / "mdgan-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path


def test_missing_inception_weights_name_file_and_place(empty_weight_dirs):
    with pytest.raises(InceptionWeightsNotFoundError) as raised:
        find_inception_weights()
    message = str(raised.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in message
    assert str(empty_weight_dirs / "mdgan-cache" / "weights") in message
    assert "--inception-weights" in message


def test_inception_weights_found_in_cache_dir(empty_weight_dirs):
    folder = empty_weight_dirs / "mdgan-cache" / "weights"
    folder.mkdir(parents=True)
    (folder / INCEPTION_FILE_NAMES[0]).write_bytes(b"")
    assert find_inception_weights() == folder / INCEPTION_FILE_NAMES[0]


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A weights file in the FID Inception format, with random weights: the real file cannot
    be downloaded here, but every step of the code path except the numbers can run."""
    import torchvision

    torch.manual_seed(0)
    network = torchvision.models.inception.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    # Batch statistics of one random batch keep the activations near 1; with the default
    # running statistics they shrink to about 1e-8 over the 94 convolutions.
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0
    network.train()
    with torch.no_grad():
        network(torch.rand(4, 3, 299, 299) * 2 - 1)
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILE_NAMES[0]
    torch.save(network.state_dict(), path)
    return path


def test_inception_features_match_torchmetrics(random_inception_weights):
    torchmetrics_fid = pytest.importorskip("torchmetrics.image.fid")
    images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    space = FeatureSpace("inception", InceptionFeatures(random_inception_weights), "inception-test")
    ours = space.extract(images)
    assert ours.shape == (4, 2048)

    # torchmetrics' copy of torch-fidelity's network with TensorFlow's resize (antialias=False),
    # fed the 8-bit RGB images that InceptionFeatures should build from [-1, 1] grey ones.
    reference = torchmetrics_fid.NoTrainInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(random_inception_weights),
        antialias=False,
    )
    pixels = ((images + 1) * 127.5).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    expected = reference(pixels)
    assert float(expected.abs().mean()) > 1e-3
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


REAL_INCEPTION_MISSING = True
try:
    REAL_INCEPTION_PATH = find_inception_weights()
    REAL_INCEPTION_MISSING = False
except InceptionWeightsNotFoundError:
    REAL_INCEPTION_PATH = None


@needs_fashion_mnist
@pytest.mark.skipif(
    REAL_INCEPTION_MISSING,
    reason="needs the real Inception-v3 weights pt_inception-2015-12-05-6726825d.pth in "
    "$MDGAN_CACHE_DIR/weights/, which cannot be downloaded without network access; the code "
    "path itself is tested with random weights above",
)
def test_real_inception_separates_noise():
    train = load_fashion_mnist(None, "train", 32, 1, download=False, cache_dir=None, max_images=100)
    test = load_fashion_mnist(None, "test", 32, 1, download=False, cache_dir=None, max_images=100)
    space = FeatureSpace("inception", InceptionFeatures(REAL_INCEPTION_PATH))
    train_stats = feature_statistics(space.extract(train.batch(np.arange(100))))
    test_stats = feature_statistics(space.extract(test.batch(np.arange(100))))
    noise = torch.rand(100, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise_stats = feature_statistics(space.extract(noise))
    assert frechet_distance(*train_stats, *test_stats) * 5 < frechet_distance(*train_stats, *noise_stats)


# ------------------------------------------------------------------ Fashion-MNIST classifier


def test_missing_classifier_weights_name_the_command(tmp_path):
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(ClassifierWeightsNotFoundError, match="scripts/train_fashion_classifier.py"):
        find_classifier_weights(missing)


@needs_fashion_mnist
def test_shipped_classifier_is_accurate_on_test_images():
    model, _ = load_fashion_classifier()
    test = load_fashion_mnist(None, "test", 32, 1, download=False, cache_dir=None, max_images=2000)
    labels = load_fashion_mnist_labels(None, "test", download=False, cache_dir=None, max_images=2000)
    assert classifier_accuracy(model, *dataset_tensors(test, labels)) > 0.88


@needs_fashion_mnist
def test_classifier_fd_matches_the_data():
    model, _ = load_fashion_classifier()
    space = FeatureSpace("fmnist-classifier", model.features, "fmnist-classifier")
    train = load_fashion_mnist(None, "train", 32, 1, download=False, cache_dir=None, max_images=2000)
    test = load_fashion_mnist(None, "test", 32, 1, download=False, cache_dir=None, max_images=2000)
    train_images = train.batch(np.arange(2000))
    train_stats = feature_statistics(space.extract(train_images))
    test_stats = feature_statistics(space.extract(test.batch(np.arange(2000))))
    # Images of the same distribution are much closer than the same images blurred to 8x8.
    blurred = torch.nn.functional.interpolate(
        torch.nn.functional.avg_pool2d(train_images, 4), scale_factor=4, mode="nearest"
    )
    blurred_stats = feature_statistics(space.extract(blurred))
    assert frechet_distance(*train_stats, *test_stats) * 10 < frechet_distance(*train_stats, *blurred_stats)


@needs_fashion_mnist
def test_classifier_training_is_seeded_and_learns():
    train = load_fashion_mnist(None, "train", 32, 1, download=False, cache_dir=None, max_images=512)
    labels = load_fashion_mnist_labels(None, "train", download=False, cache_dir=None, max_images=512)
    images, targets = dataset_tensors(train, labels)
    first = train_fashion_classifier(images, targets, epochs=2, batch_size=64, seed=4)
    second = train_fashion_classifier(images, targets, epochs=2, batch_size=64, seed=4)
    for name, value in first.state_dict().items():
        torch.testing.assert_close(value, second.state_dict()[name], rtol=0, atol=0)
    assert classifier_accuracy(first, images, targets) > 0.5
