import pytest
import torch

from mdgan.networks import DCGANDiscriminator, DCGANGenerator


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(size, channels):
    generator = DCGANGenerator(latent_dim=20, image_size=size, channels=channels, width=8)
    images = generator(torch.randn(5, 20))
    assert images.shape == (5, channels, size, size)
    assert images.min() >= -1
    assert images.max() <= 1
    for norm in ("batch", "none"):
        discriminator = DCGANDiscriminator(image_size=size, channels=channels, width=8, norm=norm)
        assert discriminator(images).shape == (5,)


def test_dcgan_width_sets_channels():
    generator = DCGANGenerator(image_size=64, channels=3, width=16)
    first = generator.net[0]
    assert first.out_channels == 16 * 8
    discriminator = DCGANDiscriminator(image_size=64, channels=3, width=16)
    assert discriminator.net[0].out_channels == 16


def test_dcgan_rejects_other_sizes():
    with pytest.raises(ValueError, match="image_size 32 or 64, got 128"):
        DCGANGenerator(image_size=128)
    with pytest.raises(ValueError, match="norm must be 'batch' or 'none'"):
        DCGANDiscriminator(norm="spectral")
