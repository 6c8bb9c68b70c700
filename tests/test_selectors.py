import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mdgan.selectors import AutoSelector, FaissSelector, NumbaSelector, TorchSelector, build_selector

SELECTORS = [TorchSelector, FaissSelector, NumbaSelector, AutoSelector]


def brute_force(features: np.ndarray, means: np.ndarray) -> np.ndarray:
    distances = ((features[:, None, :].astype(np.float64) - means[None].astype(np.float64)) ** 2).sum(-1)
    return distances.argmin(axis=1)  # numpy returns the first index on ties


@st.composite
def features_and_means(draw, integer=False):
    dim = draw(st.integers(1, 8))
    num_classes = draw(st.integers(1, 9))
    batch = draw(st.integers(1, 50))
    if integer:
        # Small integers make exact ties common and every distance exact in float32.
        elements = st.integers(-3, 3).map(float)
    else:
        elements = st.floats(-100, 100, allow_nan=False, width=32)
    means = draw(arrays(np.float32, (num_classes, dim), elements=elements))
    features = draw(arrays(np.float32, (batch, dim), elements=elements))
    return features, means


@pytest.mark.parametrize("selector_class", SELECTORS)
@settings(max_examples=100, deadline=None)
@given(data=features_and_means())
def test_selector_matches_brute_force(selector_class, data):
    features, means = data
    selector = selector_class().fit(torch.from_numpy(means))
    chosen = selector.select(torch.from_numpy(features)).numpy()
    assert np.array_equal(chosen, brute_force(features, means))


@pytest.mark.parametrize("selector_class", SELECTORS)
@settings(max_examples=100, deadline=None)
@given(data=features_and_means(integer=True))
def test_selector_ties_go_to_lowest_index(selector_class, data):
    features, means = data
    selector = selector_class().fit(torch.from_numpy(means))
    chosen = selector.select(torch.from_numpy(features)).numpy()
    assert np.array_equal(chosen, brute_force(features, means))


@pytest.mark.parametrize("selector_class", SELECTORS)
def test_selector_explicit_tie(selector_class):
    means = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    features = torch.tensor([[0.0, 5.0], [2.0, 0.0], [-2.0, 0.0]])
    chosen = selector_class().fit(means).select(features)
    assert chosen.tolist() == [0, 0, 1]


def test_selectors_agree_on_clip_like_features():
    generator = torch.Generator().manual_seed(0)
    means = torch.nn.functional.normalize(torch.randn(64, 512, generator=generator), dim=1)
    features = torch.nn.functional.normalize(torch.randn(5000, 512, generator=generator), dim=1)
    torch_choice = TorchSelector().fit(means).select(features)
    for selector_class in (FaissSelector, NumbaSelector):
        assert torch.equal(torch_choice, selector_class().fit(means).select(features))
    assert np.array_equal(torch_choice.numpy(), brute_force(features.numpy(), means.numpy()))


def test_numba_selector_accepts_strided_and_float64_features():
    generator = torch.Generator().manual_seed(2)
    means = torch.randn(6, 16, generator=generator)
    wide = torch.randn(200, 32, generator=generator, dtype=torch.float64)
    features = wide[::2, ::2]  # neither contiguous nor float32
    expected = brute_force(features.float().numpy(), means.numpy())
    assert np.array_equal(NumbaSelector().fit(means).select(features).numpy(), expected)


@pytest.mark.parametrize("kind", ["torch", "faiss", "numba", "auto"])
def test_selector_input_errors(kind):
    selector = build_selector(kind)
    with pytest.raises(RuntimeError, match="not fitted"):
        selector.select(torch.zeros(2, 3))
    selector.fit(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"features must be \[B, 3\]"):
        selector.select(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        selector.fit(torch.tensor([[float("nan"), 0.0, 0.0]]))


def test_unknown_selector_name():
    with pytest.raises(ValueError, match="unknown selector 'annoy'; choose one of"):
        build_selector("annoy")


def test_auto_selector_matches_every_backend():
    generator = torch.Generator().manual_seed(1)
    means = torch.randn(8, 32, generator=generator)
    auto = AutoSelector().fit(means)
    for batch in (1, 7, 300, 5000):
        features = torch.randn(batch, 32, generator=generator)
        chosen = auto.select(features)
        assert auto.chosen_kind in ("torch", "faiss", "numba")
        for selector_class in (TorchSelector, FaissSelector, NumbaSelector):
            assert torch.equal(chosen, selector_class().fit(means).select(features))
    assert len(auto.choices_) == 4


@pytest.mark.parametrize("selector_class", SELECTORS)
def test_selector_resolves_cancellation_far_from_origin(selector_class):
    # Far from the origin the float32 expansion cannot tell these two means apart: its scores
    # are about 5e5, with a rounding step of 0.03, while the true distances differ by 4e-6.
    means = torch.tensor([[1000.0, 0.0], [1000.0, 0.02]])
    features = torch.tensor([[1000.0, 0.0099], [1000.0, 0.0101], [1000.0, 0.0098], [1000.0, 0.0102]])
    expected = brute_force(features.numpy(), means.numpy())
    assert expected.tolist() == [0, 1, 0, 1]
    chosen = selector_class().fit(means).select(features)
    assert chosen.tolist() == expected.tolist()
