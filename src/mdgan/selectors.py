"""Selectors: route feature vectors to the nearest class mean.

A :class:`Selector` is fitted on the class means of one partition level, ``[K, D]``, and
assigns each feature vector to the class whose mean is nearest in Euclidean distance. Ties go
to the lowest class index, in every implementation, so the implementations agree on every
input.

Both implementations first rank classes with the expansion
``||x - m||^2 = ||x||^2 - 2 x.m + ||m||^2`` (one matrix product, fast but subject to
cancellation), then recompute in float64 the exact distances of the rows whose two best
classes are within rounding error of each other.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod

import numpy as np
import torch

__all__ = ["SELECTOR_KINDS", "AutoSelector", "FaissSelector", "Selector", "TorchSelector", "build_selector"]

logger = logging.getLogger(__name__)

# Relative margin under which two squared distances from the expansion count as a near tie.
# float32 products of D terms err by about D * 6e-8 of ||x||^2 + ||m||^2; 1e-4 covers D <= 1600.
_NEAR_TIE_MARGIN = 1e-4


class Selector(ABC):
    """Assigns feature vectors ``[B, D]`` to the nearest of ``K`` class means."""

    means_: torch.Tensor | None = None

    @abstractmethod
    def fit(self, class_means: torch.Tensor) -> Selector:
        """Store the class means ``[K, D]`` to route to; returns self."""

    @abstractmethod
    def _candidate_distances(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the two smallest approximate squared distances and their classes, ``[B, 2]``."""

    @property
    def num_classes(self) -> int:
        self._check_fitted()
        return self.means_.shape[0]

    def _check_fitted(self) -> None:
        if self.means_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(class_means) first")

    def _validate_means(self, class_means: torch.Tensor) -> torch.Tensor:
        class_means = torch.as_tensor(class_means).detach()
        if class_means.ndim != 2 or class_means.shape[0] == 0:
            raise ValueError(f"class_means must be [K, D] with K >= 1, got {tuple(class_means.shape)}")
        if not torch.isfinite(class_means).all():
            raise ValueError("class_means contain NaN or infinite values")
        return class_means.float()

    @torch.no_grad()
    def select(self, features: torch.Tensor) -> torch.Tensor:
        """Return the index of the nearest class mean for every row, int64 ``[B]``.

        The result is on the device of ``features``.
        """
        self._check_fitted()
        if features.ndim != 2 or features.shape[1] != self.means_.shape[1]:
            raise ValueError(
                f"features must be [B, {self.means_.shape[1]}], got {tuple(features.shape)}"
            )
        device = features.device
        if self.means_.shape[0] == 1 or features.shape[0] == 0:
            return torch.zeros(features.shape[0], dtype=torch.int64, device=device)

        distances, classes = self._candidate_distances(features)
        distances, classes = distances.to(device), classes.to(device)
        chosen = classes[:, 0].clone()

        # Recompute exactly where rounding in the expansion could have flipped the order.
        means = self.means_.to(device)
        scale = features.float().pow(2).sum(dim=1) + means.pow(2).sum(dim=1).max()
        near = (distances[:, 1] - distances[:, 0]) <= _NEAR_TIE_MARGIN * scale + 1e-12
        if bool(near.any()):
            rows = features[near].double()
            exact = (rows.unsqueeze(1) - means.double().unsqueeze(0)).pow(2).sum(dim=2)
            chosen[near] = exact.argmin(dim=1)  # argmin returns the first index on ties
        return chosen

    __call__ = select


class TorchSelector(Selector):
    """Nearest class mean with one torch matrix product; runs on the means' device.

    Parameters
    ----------
    device : str or torch.device, optional
        Where the class means live. Features are moved there by :meth:`select`.
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else None

    def fit(self, class_means: torch.Tensor) -> TorchSelector:
        class_means = self._validate_means(class_means)
        if self.device is not None:
            class_means = class_means.to(self.device)
        self.means_ = class_means
        self._half_norms = 0.5 * class_means.pow(2).sum(dim=1)  # [K]
        return self

    def _candidate_distances(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = features.to(self.means_.device, torch.float32)
        # 0.5 ||x - m||^2 - 0.5 ||x||^2 = 0.5 ||m||^2 - x.m, so the ranking needs no ||x||^2.
        scores = torch.addmm(self._half_norms.unsqueeze(0), features, self.means_.T, alpha=-1.0)
        values, classes = torch.topk(scores, 2, dim=1, largest=False, sorted=True)
        squared = 2.0 * values + features.pow(2).sum(dim=1, keepdim=True)
        return squared, classes


class FaissSelector(Selector):
    """Nearest class mean with a FAISS ``IndexFlatL2`` (exact search on the CPU)."""

    def fit(self, class_means: torch.Tensor) -> FaissSelector:
        import faiss

        class_means = self._validate_means(class_means).cpu()
        self.means_ = class_means
        self.index_ = faiss.IndexFlatL2(class_means.shape[1])
        self.index_.add(np.ascontiguousarray(class_means.numpy(), dtype=np.float32))
        return self

    def _candidate_distances(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        queries = np.ascontiguousarray(features.detach().float().cpu().numpy())
        distances, classes = self.index_.search(queries, 2)
        return torch.from_numpy(distances), torch.from_numpy(classes).long()


class AutoSelector(Selector):
    """Uses whichever implementation is fastest for the shape of each batch.

    The first batch of each size bucket (powers of two) is routed by every candidate, timed,
    and the fastest is kept for later batches of that bucket. All candidates return the same
    assignments, so the choice changes speed only.

    Parameters
    ----------
    device : str or torch.device, optional
        Device of the torch implementation; FAISS is a candidate only on the CPU.
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.candidates: dict[str, Selector] = {"torch": TorchSelector(device)}
        if self.device is None or self.device.type == "cpu":
            self.candidates["faiss"] = FaissSelector()
        self.choices_: dict[tuple[int, str], str] = {}
        self.chosen_kind = "torch"

    def fit(self, class_means: torch.Tensor) -> AutoSelector:
        for candidate in self.candidates.values():
            candidate.fit(class_means)
        self.means_ = self.candidates["torch"].means_
        self.choices_ = {}
        return self

    def _candidate_distances(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.candidates[self.chosen_kind]._candidate_distances(features)

    @torch.no_grad()
    def select(self, features: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        bucket = max(1, int(features.shape[0])).bit_length()
        key = (bucket, features.device.type)
        if key not in self.choices_:
            timings = {}
            for kind, candidate in self.candidates.items():
                candidate.select(features)  # warm-up
                started = time.perf_counter()
                candidate.select(features)
                if features.device.type == "cuda":
                    torch.cuda.synchronize(features.device)
                timings[kind] = time.perf_counter() - started
            self.choices_[key] = min(timings, key=timings.get)
            logger.debug("selector for batches near %d rows: %s (%s)", 2 ** (bucket - 1), self.choices_[key], timings)
        self.chosen_kind = self.choices_[key]
        return self.candidates[self.chosen_kind].select(features)

    __call__ = select


SELECTOR_KINDS = ("torch", "faiss", "auto")


def build_selector(kind: str, device: str | torch.device | None = None) -> Selector:
    """Create a selector by name: ``"torch"``, ``"faiss"`` or ``"auto"``."""
    if kind == "torch":
        return TorchSelector(device=device)
    if kind == "faiss":
        return FaissSelector()
    if kind == "auto":
        return AutoSelector(device=device)
    raise ValueError(f"unknown selector {kind!r}; choose one of {SELECTOR_KINDS}")
