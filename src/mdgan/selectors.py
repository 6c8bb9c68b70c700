"""Selectors: route feature vectors to the nearest class mean.

A :class:`Selector` is fitted on the class means of one partition level, ``[K, D]``, and
assigns each feature vector to the class whose mean is nearest in Euclidean distance. Ties go
to the lowest class index, in every implementation, so the implementations agree on every
input.

Every implementation first ranks classes with the expansion
``||x - m||^2 = ||x||^2 - 2 x.m + ||m||^2`` in float32 (fast but subject to cancellation).
It then recomputes in float64 the distances of the rows whose two best classes are within
rounding error of each other, and compares in exact rational arithmetic the classes that
still tie in float64.
"""

from __future__ import annotations

import functools
import logging
import time
from abc import ABC, abstractmethod
from fractions import Fraction

import numpy as np
import torch

__all__ = [
    "SELECTOR_KINDS",
    "AutoSelector",
    "FaissSelector",
    "NumbaSelector",
    "Selector",
    "TorchSelector",
    "build_selector",
    "numba_available",
]

logger = logging.getLogger(__name__)

# Unit roundoff of float32. A float32 dot product of D terms errs by at most about
# D * u * ||x|| ||m|| (recursive summation), and a difference of two scores by twice that,
# which is at most D * u * (||x||^2 + max ||m||^2).
_FLOAT32_ROUNDOFF = 2.0**-24
# Rows whose exact float64 distances are computed at once: 256 rows x 64 classes x 768
# dimensions of float64 are 100 MB.
_EXACT_BLOCK_ELEMENTS = 256 * 64 * 768


def _exact_nearest(rows: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Nearest class mean of a few rows, exactly, with ties to the lowest class.

    The float64 expansion ranks the classes. Rows whose two best classes are still within
    float64 rounding of each other are true ties in practice, and direct float64 differences
    settle them, in blocks that bound memory.
    """
    rows, means = rows.double(), means.double()
    squared = rows.pow(2).sum(dim=1, keepdim=True) - 2.0 * rows @ means.T + means.pow(2).sum(dim=1)
    chosen = squared.argmin(dim=1)
    if means.shape[0] > 1:
        best_two = torch.topk(squared, 2, dim=1, largest=False).values
        scale = rows.pow(2).sum(dim=1) + means.pow(2).sum(dim=1).max()
        tied = torch.nonzero(best_two[:, 1] - best_two[:, 0] <= 1e-12 * scale).flatten()
        block = max(1, _EXACT_BLOCK_ELEMENTS // (means.shape[0] * means.shape[1]))
        for start in range(0, tied.numel(), block):
            indices = tied[start : start + block]
            distances = (rows[indices].unsqueeze(1) - means.unsqueeze(0)).pow(2).sum(dim=2)
            # argmin returns the first index on ties, so ties go to the lowest class.
            chosen[indices] = distances.argmin(dim=1)
            _settle_float64_ties(rows, means, indices, distances, chosen)
    return chosen


def _settle_float64_ties(
    rows: torch.Tensor,
    means: torch.Tensor,
    indices: torch.Tensor,
    distances: torch.Tensor,
    chosen: torch.Tensor,
) -> None:
    """Settle, in exact rational arithmetic, the rows whose float64 distances still tie.

    Sums of squares in float64 round too: two means at exactly the same distance can come out
    one rounding step apart, and the lower index would lose. For each such row, the classes
    within float64 rounding of the smallest distance are compared with Python fractions,
    exactly. Identical means need no comparison. Such rows are rare, and the fractions cost
    an estimated 2 ms per class at D=512 (one timing on a 2-core CPU).
    """
    smallest = distances.min(dim=1, keepdim=True).values
    close = distances <= smallest * (1.0 + 1e-12) + 1e-300
    for position in torch.nonzero(close.sum(dim=1) > 1).flatten().tolist():
        classes = torch.nonzero(close[position]).flatten()
        candidates = means[classes]
        if bool((candidates == candidates[0]).all()):
            chosen[indices[position]] = classes[0]
            continue
        row = [Fraction(value) for value in rows[indices[position]].tolist()]
        exact = [
            sum((value - Fraction(component)) ** 2 for value, component in zip(row, mean))
            for mean in candidates.tolist()
        ]
        chosen[indices[position]] = classes[exact.index(min(exact))]


def _check_finite(rows: torch.Tensor, row_indices: torch.Tensor) -> None:
    """Raise a ValueError naming the rows of ``rows`` (float32) that are not finite.

    ``row_indices`` gives the position of each of ``rows`` in the caller's batch.
    """
    finite = torch.isfinite(rows).all(dim=1)
    if not finite.all():
        bad = row_indices[~finite]
        raise ValueError(
            f"features contain NaN or infinite values in {bad.numel()} row{'s' if bad.numel() > 1 else ''} "
            f"(the first is row {int(bad[0])}); values beyond the float32 range count as infinite"
        )


class Selector(ABC):
    """Assigns feature vectors ``[B, D]`` to the nearest of ``K`` class means."""

    means_: torch.Tensor | None = None

    @abstractmethod
    def fit(self, class_means: torch.Tensor) -> Selector:
        """Store the class means ``[K, D]`` to route to; returns self."""

    @abstractmethod
    def _rank(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank classes by the expansion; return each row's nearest and the rows to recheck.

        Returns the classes ``[B]`` and the indices of the near ties: the rows whose two best
        classes are close enough that rounding in the expansion could have swapped them
        (see :meth:`_near_ties`).
        """

    @property
    def num_classes(self) -> int:
        self._check_fitted()
        return self.means_.shape[0]

    def _check_fitted(self) -> None:
        if self.means_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(class_means) first")

    def _set_means(self, class_means: torch.Tensor) -> None:
        self.means_ = class_means
        # Read once here, because on a GPU each read back in select() would wait for the device.
        self._max_squared_norm = float(class_means.pow(2).sum(dim=1).max())

    def _validate_means(self, class_means: torch.Tensor) -> torch.Tensor:
        class_means = torch.as_tensor(class_means).detach()
        if class_means.ndim != 2 or class_means.shape[0] == 0 or class_means.shape[1] == 0:
            raise ValueError(
                f"class_means must be [K, D] with K >= 1 and D >= 1, got {tuple(class_means.shape)}"
            )
        # Selectors compute in float32, so a float64 mean beyond its range would become infinite.
        class_means = class_means.float()
        if not torch.isfinite(class_means).all():
            raise ValueError(
                "class_means contain NaN or infinite values, or values beyond the float32 range "
                "(about 3.4e38)"
            )
        return class_means

    @torch.no_grad()
    def select(self, features: torch.Tensor) -> torch.Tensor:
        """Return the index of the nearest class mean for every row, int64 ``[B]``.

        ``features`` is a tensor or an array ``[B, D]``; the result is on its device. Features
        and means are compared as float32 values, exactly: the answer is brute force's on the
        features and means rounded to float32. Features with NaN or infinite values raise a
        ``ValueError``.
        """
        features = self._checked_features(features)
        device = features.device
        if features.shape[0] == 0:
            return torch.zeros(0, dtype=torch.int64, device=device)
        if self.means_.shape[0] == 1:
            _check_finite(features.float(), torch.arange(features.shape[0], device=device))
            return torch.zeros(features.shape[0], dtype=torch.int64, device=device)

        chosen, near = self._rank(features)
        chosen = chosen.to(device)
        if near.numel():
            # Non-finite rows always land among the near ties, so checking these is enough.
            rows = features[near].float()
            _check_finite(rows, near)
            chosen[near] = _exact_nearest(rows, self.means_.to(device))
        return chosen

    def _checked_features(self, features) -> torch.Tensor:
        """Return ``features`` as a ``[B, D]`` tensor that matches the fitted means, or raise."""
        self._check_fitted()
        if isinstance(features, torch.Tensor):
            features = features.detach()
        else:
            if isinstance(features, np.ndarray) and (
                not features.flags.writeable or any(stride < 0 for stride in features.strides)
            ):
                # torch cannot share negative strides or read-only memory, so copy.
                features = np.array(features)
            try:
                features = torch.as_tensor(features)
            except (TypeError, RuntimeError, ValueError) as error:
                raise TypeError(
                    f"features must be a torch.Tensor or an array [B, D], got {type(features).__name__} "
                    f"({error})"
                ) from error
        if features.ndim != 2 or features.shape[1] != self.means_.shape[1]:
            raise ValueError(
                f"features must be [B, {self.means_.shape[1]}], got {tuple(features.shape)}"
            )
        return features

    def _near_tie_tolerance(self) -> tuple[float, float]:
        """Return ``(a, b)``: a row is a near tie when its gap is at most ``a ||x||^2 + b``."""
        margin = 2.0 * self.means_.shape[1] * _FLOAT32_ROUNDOFF
        return margin, margin * self._max_squared_norm + 1e-12

    def _near_ties(self, gap: torch.Tensor, squared_norms: torch.Tensor) -> torch.Tensor:
        """Return the indices of the rows to recompute exactly.

        ``gap`` is the second-smallest minus the smallest squared distance by the expansion,
        and ``squared_norms`` is ``||x||^2``, per row.
        """
        slope, offset = self._near_tie_tolerance()
        # "not greater" rather than "at most": a NaN gap or norm, from overflow or from NaN
        # features, also sends the row to the exact path, which handles or rejects it.
        return torch.nonzero(~(gap > slope * squared_norms + offset)).flatten()

    __call__ = select


class TorchSelector(Selector):
    """Nearest class mean with torch matrix products; runs on the means' device.

    On the CPU, large batches are processed in chunks of ``chunk_size`` rows, so the scores,
    the norms and the ranking of a chunk all read it from the cache after one read from
    memory.

    Parameters
    ----------
    device : str or torch.device, optional
        Where the class means live. Features are moved there by :meth:`select`.
    chunk_size : int
        Rows per chunk on the CPU (4096 rows of 512 float32 are 8 MiB).
    """

    def __init__(self, device: str | torch.device | None = None, chunk_size: int = 4096) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.device = torch.device(device) if device is not None else None
        self.chunk_size = chunk_size

    def fit(self, class_means: torch.Tensor) -> TorchSelector:
        class_means = self._validate_means(class_means)
        if self.device is not None:
            class_means = class_means.to(self.device)
        self._set_means(class_means)
        # A transposed view, not a contiguous [D, K] copy: with the copy, MKL's sgemm ran 3x
        # slower on CPU (torch 2.14.1, 1M x 512 features, 4 classes).
        self._means_t = class_means.T
        self._half_norms = (0.5 * class_means.pow(2).sum(dim=1)).unsqueeze(0)  # [1, K]
        return self

    def _chunk_candidates(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # 0.5 ||x - m||^2 - 0.5 ||x||^2 = 0.5 ||m||^2 - x.m, so the ranking needs no ||x||^2.
        scores = torch.addmm(self._half_norms, features, self._means_t, alpha=-1.0)  # [c, K]
        # The two smallest scores: a minimum, then a minimum with the first masked, which is
        # faster than topk for the few classes of a partition.
        best, best_class = scores.min(dim=1)
        second = scores.scatter(1, best_class.unsqueeze(1), float("inf")).amin(dim=1)
        squared_norms = torch.linalg.vector_norm(features, dim=1).square_()
        return best_class, 2.0 * (second - best), squared_norms

    def _rank(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        classes, gaps, squared_norms = self._candidates(features)
        return classes, self._near_ties(gaps, squared_norms).to(features.device)

    def _candidates(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the nearest class, the gap to the second nearest and the squared norm of every row."""
        features = features.to(self.means_.device, torch.float32)
        rows = features.shape[0]
        if features.device.type != "cpu" or rows <= self.chunk_size:
            return self._chunk_candidates(features)
        classes = torch.empty(rows, dtype=torch.int64)
        gaps = features.new_empty(rows)
        squared_norms = features.new_empty(rows)
        for start in range(0, rows, self.chunk_size):
            end = start + self.chunk_size
            classes[start:end], gaps[start:end], squared_norms[start:end] = self._chunk_candidates(
                features[start:end]
            )
        return classes, gaps, squared_norms


class FaissSelector(Selector):
    """Nearest class mean with a FAISS ``IndexFlatL2`` (exact search on the CPU)."""

    def fit(self, class_means: torch.Tensor) -> FaissSelector:
        import faiss

        class_means = self._validate_means(class_means).cpu()
        self._set_means(class_means)
        self.index_ = faiss.IndexFlatL2(class_means.shape[1])
        self.index_.add(np.ascontiguousarray(class_means.numpy(), dtype=np.float32))
        return self

    def _rank(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cpu_features = features.detach().float().cpu()
        distances, classes = self.index_.search(np.ascontiguousarray(cpu_features.numpy()), 2)
        squared_norms = torch.linalg.vector_norm(cpu_features, dim=1).square_()
        distances = torch.from_numpy(distances)
        near = self._near_ties(distances[:, 1] - distances[:, 0], squared_norms)
        return torch.from_numpy(classes[:, 0]).long(), near.to(features.device)


@functools.cache
def numba_available() -> bool:
    """Return whether Numba, which :class:`NumbaSelector` needs, can be imported."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


class NumbaSelector(Selector):
    """Nearest class mean with one fused pass per feature vector, compiled by Numba (CPU).

    Routing a large batch is bound by reading the features from memory. Torch reads each
    chunk once for the matrix product, again for the row norms and once more for the ranking.
    This kernel reads a row once, on all cores, and computes its dot products, its norm and
    its two smallest scores while the row is in the L1 cache. It is the fastest implementation
    for the few classes of a partition. With 64 classes or more, each row needs enough
    arithmetic that MKL's matrix product in :class:`TorchSelector` is faster.

    The kernel is compiled on the first :meth:`select` of a process (a few seconds) and cached
    on disk by Numba for later processes. Features on a GPU are copied to the CPU.
    """

    def fit(self, class_means: torch.Tensor) -> NumbaSelector:
        if not numba_available():
            raise ImportError("NumbaSelector needs numba; install it with: pip install numba")
        class_means = self._validate_means(class_means).cpu().contiguous()
        self._set_means(class_means)
        self._means = class_means.numpy()
        self._half_norms = (0.5 * class_means.pow(2).sum(dim=1)).numpy()
        return self

    def _rank(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from ._nearest_kernel import nearest_with_near_ties

        cpu_features = features.detach().to("cpu", torch.float32).contiguous()
        rows = cpu_features.shape[0]
        classes = torch.empty(rows, dtype=torch.int64)
        near = torch.empty(rows, dtype=torch.bool)
        slope, offset = self._near_tie_tolerance()
        nearest_with_near_ties(
            cpu_features.numpy(), self._means, self._half_norms, slope, offset, classes.numpy(), near.numpy()
        )
        return classes, torch.nonzero(near).flatten().to(features.device)


class AutoSelector(Selector):
    """Uses whichever implementation is fastest for the shape of each batch.

    The first batch of each size bucket (powers of two) and shape of the means is routed by
    every candidate, timed (best of three), and the fastest is kept for later batches of that
    bucket and shape. All candidates return the same
    assignments, so the choice changes speed only.

    Parameters
    ----------
    device : str or torch.device, optional
        Device of the torch implementation; FAISS and Numba (when installed) are candidates
        only on the CPU.
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.candidates: dict[str, Selector] = {"torch": TorchSelector(device)}
        if self.device is None or self.device.type == "cpu":
            self.candidates["faiss"] = FaissSelector()
            if numba_available():
                self.candidates["numba"] = NumbaSelector()
        self.choices_: dict[tuple, str] = {}
        self.chosen_kind = "torch"

    def fit(self, class_means: torch.Tensor) -> AutoSelector:
        for candidate in self.candidates.values():
            candidate.fit(class_means)
        self._set_means(self.candidates["torch"].means_)
        return self

    def _rank(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.candidates[self.chosen_kind]._rank(features)

    @torch.no_grad()
    def select(self, features: torch.Tensor) -> torch.Tensor:
        features = self._checked_features(features)
        bucket = max(1, int(features.shape[0])).bit_length()
        key = (bucket, features.device.type, *self.means_.shape)
        if key not in self.choices_:
            timings = {}
            for kind, candidate in self.candidates.items():
                candidate.select(features)  # warm-up
                timings[kind] = float("inf")
                for _ in range(3):
                    started = time.perf_counter()
                    candidate.select(features)
                    if features.device.type == "cuda":
                        torch.cuda.synchronize(features.device)
                    timings[kind] = min(timings[kind], time.perf_counter() - started)
            self.choices_[key] = min(timings, key=timings.get)
            logger.info(
                "auto selector: %s for batches of %d to %d rows (%s)",
                self.choices_[key],
                2 ** (bucket - 1),
                2**bucket - 1,
                ", ".join(f"{kind} {seconds * 1e3:.3g} ms" for kind, seconds in timings.items()),
            )
        self.chosen_kind = self.choices_[key]
        return self.candidates[self.chosen_kind].select(features)

    __call__ = select


SELECTOR_KINDS = ("torch", "faiss", "numba", "auto")


def build_selector(kind: str, device: str | torch.device | None = None) -> Selector:
    """Create a selector by name: ``"torch"``, ``"faiss"``, ``"numba"`` or ``"auto"``."""
    if kind == "torch":
        return TorchSelector(device=device)
    if kind == "faiss":
        return FaissSelector()
    if kind == "numba":
        return NumbaSelector()
    if kind == "auto":
        return AutoSelector(device=device)
    raise ValueError(f"unknown selector {kind!r}; choose one of {SELECTOR_KINDS}")
