from functools import partial

import pytest
import torch
from torch import nn

from mdgan.discriminators import RoutedDiscriminatorBank, discriminator_losses, generator_losses
from mdgan.networks import DCGANDiscriminator


def make_bank(num_discriminators=1, loss="non-saturating", seed=0):
    torch.manual_seed(seed)
    return RoutedDiscriminatorBank(
        partial(DCGANDiscriminator, 32, 1, 8),
        partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999)),
        num_discriminators,
        loss=loss,
    )


def train_a_few_steps(bank, steps=3):
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        real = torch.randn(16, 1, 32, 32, generator=generator)
        fake = torch.randn(16, 1, 32, 32, generator=generator)
        classes = torch.arange(16) % bank.num_discriminators
        bank.zero_grad()
        bank.discriminator_loss(real, classes, fake, classes.flip(0)).total.backward()
        bank.step()


def assert_optimizer_states_equal(child, parent):
    child_state, parent_state = child.state_dict(), parent.state_dict()
    assert child_state["param_groups"] == parent_state["param_groups"]
    assert child_state["state"].keys() == parent_state["state"].keys()
    for index, values in parent_state["state"].items():
        for name, value in values.items():
            assert torch.equal(child_state["state"][index][name], value)


@pytest.mark.parametrize(
    "parents",
    [[0, 0, 1, 1], [0, 1, 1, 1, 0]],  # binary growth, and a flat cut with one and three children
    ids=["binary", "flat"],
)
def test_grow_children_copy_parents(parents):
    bank = make_bank(2)
    train_a_few_steps(bank)
    old_discriminators = [d for d in bank.discriminators]
    old_optimizers = list(bank.optimizers)
    probe = torch.randn(8, 1, 32, 32)
    bank.eval()
    with torch.no_grad():
        old_outputs = [d(probe) for d in old_discriminators]
    old_states = [o.state_dict() for o in old_optimizers]

    bank.grow(parents)
    bank.eval()
    assert bank.num_discriminators == len(parents)
    with torch.no_grad():
        for child, parent in zip(bank.discriminators, parents):
            assert torch.equal(child(probe), old_outputs[parent])
    for child_optimizer, parent in zip(bank.optimizers, parents):
        assert_optimizer_states_equal(child_optimizer, old_optimizers[parent])
        assert old_states[parent]["state"]  # the parent had Adam moments to copy


def test_grow_children_outputs_match_in_train_mode():
    bank = make_bank(1)
    train_a_few_steps(bank)
    probe = torch.randn(8, 1, 32, 32)
    parent = bank.discriminators[0]
    parent_copy = {k: v.clone() for k, v in parent.state_dict().items()}
    bank.grow([0, 0])
    for child in bank.discriminators:
        assert all(torch.equal(child.state_dict()[k], v) for k, v in parent_copy.items())
    bank.train()
    first, second = (d(probe) for d in bank.discriminators)
    assert torch.equal(first, second)


def test_grown_siblings_do_not_share_state():
    bank = make_bank(1)
    train_a_few_steps(bank)
    bank.grow([0, 0])
    sibling_moments = bank.optimizers[1].state_dict()["state"][0]["exp_avg"].clone()
    sibling_weights = bank.discriminators[1].net[0].weight.detach().clone()
    # Train only the first child.
    real = torch.randn(8, 1, 32, 32)
    classes = torch.zeros(8, dtype=torch.int64)
    bank.zero_grad()
    bank.discriminator_loss(real, classes, real.flip(0), classes).total.backward()
    bank.optimizers[0].step()
    assert torch.equal(bank.optimizers[1].state_dict()["state"][0]["exp_avg"], sibling_moments)
    assert torch.equal(bank.discriminators[1].net[0].weight, sibling_weights)
    assert not torch.equal(bank.discriminators[0].net[0].weight, sibling_weights)


class RecordingDiscriminator(nn.Module):
    """Scores an image by its mean pixel and records the images it was shown."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, images):
        self.seen.append(images.detach().clone())
        return self.scale * images.flatten(1).mean(dim=1)


def test_routed_losses_use_only_routed_images():
    bank = RoutedDiscriminatorBank(RecordingDiscriminator, partial(torch.optim.SGD, lr=0.1), 3)
    real = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1)
    fake = -torch.arange(1, 5, dtype=torch.float32).view(4, 1, 1, 1)
    real_classes = torch.tensor([0, 1, 1, 2, 0, 1])
    fake_classes = torch.tensor([1, 1, 0, 1])

    result = bank.discriminator_loss(real, real_classes, fake, fake_classes)

    assert result.real_counts.tolist() == [2, 3, 1]
    assert result.fake_counts.tolist() == [1, 3, 0]
    seen = [torch.cat(d.seen).flatten().tolist() for d in bank.discriminators]
    assert seen == [[0.0, 4.0, -3.0], [1.0, 2.0, 5.0, -1.0, -2.0, -4.0], [3.0]]

    expected = []
    for k in range(3):
        real_logits = real[real_classes == k].flatten()
        fake_logits = fake[fake_classes == k].flatten()
        real_loss, fake_loss = discriminator_losses(real_logits, fake_logits, "non-saturating")
        value = real_loss.mean() + (fake_loss.mean() if len(fake_logits) else 0.0)
        expected.append(float(value))
    assert torch.allclose(result.per_discriminator, torch.tensor(expected))
    assert torch.isclose(result.total, torch.tensor(sum(expected)))


def test_generator_loss_averages_over_batch():
    bank = RoutedDiscriminatorBank(RecordingDiscriminator, partial(torch.optim.SGD, lr=0.1), 2)
    fake = torch.tensor([0.5, -1.0, 2.0]).view(3, 1, 1, 1)
    classes = torch.tensor([1, 0, 1])
    result = bank.generator_loss(fake, classes)
    expected = generator_losses(fake.flatten(), "non-saturating").mean()
    assert torch.isclose(result.total, expected)
    assert result.fake_counts.tolist() == [1, 2]
    assert [len(torch.cat(d.seen)) for d in bank.discriminators] == [1, 2]


def test_discriminator_without_images_is_skipped():
    bank = RoutedDiscriminatorBank(RecordingDiscriminator, partial(torch.optim.SGD, lr=0.1), 2)
    images = torch.ones(4, 1, 1, 1)
    classes = torch.zeros(4, dtype=torch.int64)
    result = bank.discriminator_loss(images, classes, images, classes)
    assert bank.discriminators[1].seen == []
    assert torch.isnan(result.per_discriminator[1])


def test_hinge_losses():
    real_loss, fake_loss = discriminator_losses(torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5]), "hinge")
    assert real_loss.tolist() == [0.0, 1.0]
    assert fake_loss.tolist() == [0.0, 1.5]
    assert generator_losses(torch.tensor([0.5]), "hinge").tolist() == [-0.5]


def test_bank_input_errors():
    bank = make_bank(2)
    with pytest.raises(ValueError, match="do not name discriminators"):
        bank.grow([0, 2])
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 2\)"):
        images = torch.zeros(2, 1, 32, 32)
        bank.discriminator_loss(images, torch.tensor([0, 3]), images, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unknown loss 'wasserstein'"):
        make_bank(1, loss="wasserstein")


def test_vmapped_bank_equals_routed_loop():
    from mdgan.discriminators import VmappedDiscriminatorBank

    factory = partial(DCGANDiscriminator, 32, 1, 8, "none")
    optimizer = partial(torch.optim.Adam, lr=1e-3)
    torch.manual_seed(0)
    routed = RoutedDiscriminatorBank(factory, optimizer, 1)
    routed.grow([0, 0, 0, 0])
    for discriminator in routed.discriminators:  # make the four differ
        with torch.no_grad():
            for parameter in discriminator.parameters():
                parameter.add_(0.01 * torch.randn_like(parameter))
    vmapped = VmappedDiscriminatorBank(factory, optimizer, 4)
    vmapped.load_state_dict(routed.state_dict())

    generator = torch.Generator().manual_seed(2)
    real = torch.randn(20, 1, 32, 32, generator=generator)
    fake = torch.randn(20, 1, 32, 32, generator=generator, requires_grad=True)
    real_classes = torch.tensor([0] * 9 + [1] * 6 + [3] * 5)  # class 2 gets no real image
    fake_classes = torch.tensor([1] * 12 + [2] * 8)  # classes 0 and 3 get no generated image

    for method, arguments in [
        ("discriminator_loss", (real, real_classes, fake, fake_classes)),
        ("generator_loss", (fake, fake_classes)),
    ]:
        results, gradients = [], []
        for bank in (routed, vmapped):
            bank.zero_grad()
            fake.grad = None
            result = getattr(bank, method)(*arguments)
            result.total.backward()
            results.append(result)
            gradients.append(
                [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in bank.parameters()]
                + [fake.grad.clone()]
            )
        expected, actual = results
        assert torch.allclose(actual.total, expected.total, atol=1e-5)
        assert torch.allclose(actual.per_discriminator, expected.per_discriminator, atol=1e-5, equal_nan=True)
        assert torch.equal(actual.real_counts, expected.real_counts)
        assert torch.equal(actual.fake_counts, expected.fake_counts)
        for ours, theirs in zip(gradients[1], gradients[0]):
            assert torch.allclose(ours, theirs, atol=1e-5)


def test_vmapped_bank_rejects_batch_norm():
    from mdgan.discriminators import VmappedDiscriminatorBank

    with pytest.raises(ValueError, match="discriminator_norm=none"):
        VmappedDiscriminatorBank(partial(DCGANDiscriminator, 32, 1, 8, "batch"), torch.optim.Adam, 2)
