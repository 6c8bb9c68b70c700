from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mdgan.selectors import AutoSelector, FaissSelector, NumbaSelector, TorchSelector, build_selector

SELECTORS = [TorchSelector, FaissSelector, NumbaSelector, AutoSelector]


def brute_force(features: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Return the nearest means in float64, exact enough for random data without ties."""
    distances = ((features[:, None, :].astype(np.float64) - means[None].astype(np.float64)) ** 2).sum(-1)
    return distances.argmin(axis=1)  # numpy returns the first index on ties


def exact_brute_force(features: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Return the nearest means in rational arithmetic, ties to the lowest index (small inputs)."""
    rational_means = [[Fraction(float(value)) for value in mean] for mean in means]
    chosen = []
    for row in features:
        rational_row = [Fraction(float(value)) for value in row]
        distances = [sum((a - b) ** 2 for a, b in zip(rational_row, mean)) for mean in rational_means]
        chosen.append(distances.index(min(distances)))
    return np.array(chosen, dtype=np.int64)


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
    assert np.array_equal(chosen, exact_brute_force(features, means))


@pytest.mark.parametrize("selector_class", SELECTORS)
@settings(max_examples=100, deadline=None)
@given(data=features_and_means(integer=True))
def test_selector_ties_go_to_lowest_index(selector_class, data):
    features, means = data
    selector = selector_class().fit(torch.from_numpy(means))
    chosen = selector.select(torch.from_numpy(features)).numpy()
    assert np.array_equal(chosen, exact_brute_force(features, means))


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


def test_numba_strided_float64_features():
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
def test_cancellation_far_from_origin(selector_class):
    # Far from the origin the float32 expansion cannot tell these two means apart: its scores
    # are about 5e5, with a rounding step of 0.03, while the true distances differ by 4e-6.
    means = torch.tensor([[1000.0, 0.0], [1000.0, 0.02]])
    features = torch.tensor([[1000.0, 0.0099], [1000.0, 0.0101], [1000.0, 0.0098], [1000.0, 0.0102]])
    expected = exact_brute_force(features.numpy(), means.numpy())
    assert expected.tolist() == [0, 1, 0, 1]
    chosen = selector_class().fit(means).select(features)
    assert chosen.tolist() == expected.tolist()


@pytest.mark.parametrize("selector_class", SELECTORS)
def test_float32_overflow_stays_exact(selector_class):
    # Squared norms near 1e40 overflow float32, yet the rows must still get brute force's class.
    generator = torch.Generator().manual_seed(3)
    means = torch.randn(5, 8, generator=generator) * 1e20
    features = torch.randn(100, 8, generator=generator) * 1e20
    chosen = selector_class().fit(means).select(features)
    assert chosen.tolist() == exact_brute_force(features.numpy(), means.numpy()).tolist()


@pytest.mark.parametrize("selector_class", SELECTORS)
def test_select_rejects_nan_features(selector_class):
    selector = selector_class().fit(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    features = torch.tensor([[0.1, 0.2, 0.3], [float("nan"), 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"NaN or infinite values.* in 1 row \(the first is row 1\)"):
        selector.select(features)


@pytest.mark.parametrize("kind", ["torch", "faiss", "numba", "auto"])
def test_select_accepts_numpy_arrays(kind):
    means = np.array([[0.0, 0.0], [4.0, 4.0]], dtype=np.float32)
    selector = build_selector(kind).fit(means)
    assert selector.select(np.array([[1.0, 1.0], [3.0, 3.0]], dtype=np.float32)).tolist() == [0, 1]
    with pytest.raises(TypeError, match="features must be a torch.Tensor or an array"):
        selector.select("features")


def test_fit_rejects_invalid_means():
    with pytest.raises(ValueError, match="beyond the float32 range"):
        TorchSelector().fit(torch.tensor([[1e40, 0.0], [1.0, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"D >= 1"):
        TorchSelector().fit(torch.zeros(3, 0))


@pytest.mark.parametrize("selector_class", SELECTORS)
def test_exact_tie_rounded_apart(selector_class):
    # All six means are at exactly the same distance from the feature. Float64 sums of squares
    # in different orders round the last one lower, yet the tie must go to class 0.
    means = torch.tensor([[0.0, 0.02, 0.02, 0.02, 0.02]] * 5 + [[0.02, 0.02, 0.0, 0.02, 0.02]])
    features = torch.ones(1, 5)
    assert exact_brute_force(features.numpy(), means.numpy()).tolist() == [0]
    assert selector_class().fit(means).select(features).tolist() == [0]


@pytest.mark.parametrize("kind", ["torch", "faiss", "numba", "auto"])
def test_reversed_and_read_only_arrays(kind):
    means = np.array([[0.0, 0.0], [4.0, 4.0]], dtype=np.float32)
    features = np.array([[3.0, 3.0], [1.0, 1.0]], dtype=np.float32)
    selector = build_selector(kind).fit(means)
    assert selector.select(features[::-1]).tolist() == [0, 1]
    read_only = np.broadcast_to(features[:1], (3, 2))
    assert selector.select(read_only).tolist() == [1, 1, 1]


@pytest.mark.parametrize("kind", ["torch", "faiss", "numba", "auto"])
def test_single_class_checks_features(kind):
    selector = build_selector(kind).fit(torch.zeros(1, 2))
    assert selector.select(torch.ones(3, 2)).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match=r"NaN or infinite values in 2 rows \(the first is row 0\)"):
        selector.select(torch.tensor([[float("nan"), 0.0], [1.0, float("inf")]]))
    with pytest.raises(ValueError, match=r"features must be \[B, 2\], got \(\)"):
        selector.select(torch.tensor(1.0))
