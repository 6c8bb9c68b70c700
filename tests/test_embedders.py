import pytest
import torch

from mdgan.embedders import (
    ClipWeightsNotFoundError,
    OpenClipEmbedder,
    PixelEmbedder,
    clip_weights_available,
)

from conftest import CLIP_ARCHITECTURE


@pytest.fixture(scope="module")
def clip_embedder(clip_checkpoint):
    path, _ = clip_checkpoint
    return OpenClipEmbedder(CLIP_ARCHITECTURE, pretrained=str(path))


def test_clip_loads_local_file_offline(clip_checkpoint, clip_embedder):
    _, original = clip_checkpoint
    loaded = clip_embedder.model.state_dict()
    for name, value in original.state_dict().items():
        assert torch.equal(loaded[name], value), name


@pytest.mark.parametrize("size, channels", [(32, 1), (32, 3), (64, 1), (64, 3)])
def test_clip_embeds_generator_outputs(clip_embedder, size, channels):
    images = torch.rand(3, channels, size, size) * 2 - 1
    features = clip_embedder.embed_images(images)
    assert features.shape == (3, clip_embedder.feature_dim)
    assert torch.allclose(features.norm(dim=1), torch.ones(3), atol=1e-5)


def test_clip_preprocess_matches_clip_normalisation(clip_embedder):
    images = torch.zeros(1, 3, 224, 224)  # mid-grey in [-1, 1] is 0.5 in [0, 1]
    processed = clip_embedder.preprocess(images)
    expected = (0.5 - clip_embedder.mean) / clip_embedder.std
    assert torch.allclose(processed[0, :, 0, 0], expected.flatten())
    small = clip_embedder.preprocess(torch.zeros(2, 1, 32, 32))
    assert small.shape == (2, 3, *clip_embedder.input_size)


def test_clip_embeds_text(clip_embedder):
    prompts = ["man with a smile", "woman with a neutral face"]
    features = clip_embedder.embed_text(prompts, templates=["a photo of a {}.", "a face of a {}."])
    assert features.shape == (2, clip_embedder.feature_dim)
    assert torch.allclose(features.norm(dim=1), torch.ones(2), atol=1e-5)


def test_clip_missing_file_names_option(tmp_path):
    missing = tmp_path / "nothing.safetensors"
    with pytest.raises(ClipWeightsNotFoundError, match="embedder.clip_pretrained"):
        OpenClipEmbedder(CLIP_ARCHITECTURE, pretrained=str(missing))


def test_clip_availability_check_is_offline(clip_checkpoint, tmp_path):
    path, _ = clip_checkpoint
    available, reason = clip_weights_available(CLIP_ARCHITECTURE, str(path))
    assert available
    assert str(path) in reason
    # An empty cache: the tag is not available, and nothing is downloaded.
    available, reason = clip_weights_available("ViT-B-32", "openai", cache_dir=tmp_path)
    assert not available
    assert "embedder.clip_pretrained" in reason


def test_unknown_clip_model():
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Q-99'"):
        OpenClipEmbedder("ViT-Q-99", pretrained=None)


def test_pixel_embedder_shapes():
    embedder = PixelEmbedder(size=4, channels=1)
    assert embedder.embed_images(torch.zeros(2, 3, 32, 32)).shape == (2, 16)
    assert embedder.embed_images(torch.zeros(2, 1, 64, 64)).shape == (2, 16)
    assert embedder.feature_dim == 16
    assert not embedder.supports_text
    with pytest.raises(NotImplementedError, match="does not embed text"):
        embedder.embed_text(["a"])


def test_pixel_embedder_averages_blocks():
    images = torch.arange(16.0).view(1, 1, 4, 4)
    features = PixelEmbedder(size=2, channels=1).embed_images(images)
    assert features.tolist() == [[2.5, 4.5, 10.5, 12.5]]


def test_pixel_pca_matches_numpy_projection():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(200, 1, 8, 8, generator=generator) * 2 - 1
    embedder = PixelEmbedder(size=4, channels=1, pca_components=3)
    with pytest.raises(RuntimeError, match="needs fit"):
        embedder.embed_images(images)
    embedder.fit([images[:100], images[100:]])
    features = embedder.embed_images(images).double()
    # Projections on principal axes are uncorrelated with decreasing variances.
    covariance = torch.cov(features.T)
    off_diagonal = covariance - torch.diag(torch.diag(covariance))
    assert off_diagonal.abs().max() < 1e-5
    variances = torch.diag(covariance)
    assert (variances[:-1] >= variances[1:]).all()
    # The explained variance equals the top eigenvalues of the pixel covariance.
    pixels = torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1).double()
    top = torch.linalg.eigvalsh(torch.cov(pixels.T)).flip(0)[:3]
    assert torch.allclose(variances, top, rtol=1e-4)


def test_pixel_pca_state_round_trip():
    images = torch.rand(50, 1, 8, 8)
    fitted = PixelEmbedder(size=4, channels=1, pca_components=2).fit([images])
    restored = PixelEmbedder(size=4, channels=1, pca_components=2)
    restored.load_fitted_state_dict(fitted.fitted_state_dict())
    assert torch.equal(restored.embed_images(images), fitted.embed_images(images))
