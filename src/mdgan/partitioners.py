"""Partitioners: split the training set into nested classes, one discriminator per class.

A :class:`Partition` stores a class label for every image at every growth level, and the parent
of every class at the previous level. Level 0 has one class, and each later level refines the
one before it. A discriminator created at a split can therefore inherit from the
discriminator whose images it now shares.

Two methods build partitions:

* :class:`WardPartitioner` clusters image features with Ward's agglomerative method, which
  repeatedly merges the two clusters with the smallest increase in within-cluster variance,
  ``|Ci||Cj| / (|Ci| + |Cj|) * ||mu_i - mu_j||^2``.
* :class:`PromptPartitioner` assigns each image to the text prompt of highest cosine
  similarity (hand-defined classes, for example "man with a smile").
"""

from __future__ import annotations

import logging
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Partition",
    "Partitioner",
    "PromptPartitioner",
    "WardPartitioner",
    "binary_levels_from_tree",
    "flat_levels_from_tree",
    "ward_pairing",
]

logger = logging.getLogger(__name__)

PromptTree = Union[str, Sequence["PromptTree"]]


@dataclass(frozen=True)
class Partition:
    """Nested class labels of a dataset at every growth level.

    Attributes
    ----------
    labels : np.ndarray
        int64 ``[num_levels, num_images]``; ``labels[l, i]`` is the class of image ``i`` at
        level ``l``. Classes at each level are numbered ``0 .. num_classes(l) - 1``.
    parents : tuple of np.ndarray
        ``parents[l][c]`` is the class at level ``l - 1`` that contains class ``c`` of level
        ``l``; ``parents[0]`` is ``[-1]``.
    class_names : tuple of tuple of str
        A readable name of every class at every level (prompts, or ``"L2/C3"`` style names).
    """

    labels: np.ndarray
    parents: tuple[np.ndarray, ...]
    class_names: tuple[tuple[str, ...], ...] = field(default=())

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels, dtype=np.int64)
        parents = tuple(np.asarray(p, dtype=np.int64) for p in self.parents)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "parents", parents)
        if not self.class_names:
            names = tuple(
                tuple(f"L{level}/C{c}" for c in range(len(parents[level])))
                for level in range(len(parents))
            )
            object.__setattr__(self, "class_names", names)
        self.validate()

    @property
    def num_levels(self) -> int:
        return self.labels.shape[0]

    @property
    def num_images(self) -> int:
        return self.labels.shape[1]

    def num_classes(self, level: int) -> int:
        return len(self.parents[level])

    def class_sizes(self, level: int) -> np.ndarray:
        """Images per class at ``level``, int64 ``[num_classes(level)]``."""
        return np.bincount(self.labels[level], minlength=self.num_classes(level))

    def children(self, level: int, class_index: int) -> np.ndarray:
        """Classes of level ``level + 1`` inside ``class_index`` of ``level``."""
        return np.flatnonzero(self.parents[level + 1] == class_index)

    def class_means(self, features: torch.Tensor, level: int) -> torch.Tensor:
        """Mean feature of each class at ``level``, ``[num_classes(level), D]`` in float32."""
        if features.shape[0] != self.num_images:
            raise ValueError(
                f"features have {features.shape[0]} rows but the partition covers "
                f"{self.num_images} images"
            )
        labels = torch.as_tensor(self.labels[level], device=features.device)
        num_classes = self.num_classes(level)
        sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64, device=features.device)
        # Chunks keep the float64 copy small for large feature sets.
        for start in range(0, len(labels), 65536):
            rows = slice(start, start + 65536)
            sums.index_add_(0, labels[rows], features[rows].double())
        counts = torch.bincount(labels, minlength=num_classes).double().unsqueeze(1)
        if bool((counts == 0).any()):
            empty = torch.nonzero(counts.squeeze(1) == 0).flatten().tolist()
            raise ValueError(f"classes {empty} of level {level} have no images, so no class mean")
        return (sums / counts).float()

    def validate(self) -> None:
        """Raise ValueError unless the levels are consistent and nested."""
        if self.labels.ndim != 2 or self.labels.shape[0] == 0:
            raise ValueError(f"labels must be [num_levels, num_images], got {self.labels.shape}")
        if len(self.parents) != self.labels.shape[0]:
            raise ValueError(
                f"{self.labels.shape[0]} label levels but {len(self.parents)} parent arrays"
            )
        if not np.array_equal(self.parents[0], [-1]):
            raise ValueError(f"level 0 must be one class with parent -1, got {self.parents[0]}")
        for level in range(self.num_levels):
            row = self.labels[level]
            num_classes = len(self.parents[level])
            if row.size and (row.min() < 0 or row.max() >= num_classes):
                raise ValueError(f"labels of level {level} must lie in [0, {num_classes})")
            if level == 0:
                continue
            parents = self.parents[level]
            if parents.min() < 0 or parents.max() >= len(self.parents[level - 1]):
                raise ValueError(f"parents of level {level} name classes that do not exist")
            if not np.array_equal(parents[row], self.labels[level - 1]):
                raise ValueError(f"level {level} is not nested in level {level - 1}")

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Flatten into named tensors for a safetensors file (names go to JSON separately)."""
        tensors = {"partition.labels": torch.from_numpy(self.labels.copy())}
        for level, parents in enumerate(self.parents):
            tensors[f"partition.parents.{level}"] = torch.from_numpy(parents.copy())
        return tensors

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, torch.Tensor], class_names: Sequence[Sequence[str]] = ()
    ) -> Partition:
        labels = tensors["partition.labels"].numpy()
        parents = tuple(tensors[f"partition.parents.{level}"].numpy() for level in range(len(labels)))
        return cls(labels, parents, tuple(tuple(names) for names in class_names))


class Partitioner(ABC):
    """Builds a :class:`Partition` from image features ``[N, D]``."""

    @abstractmethod
    def fit(self, features: torch.Tensor) -> Partition:
        """Partition the images whose features are given, at every growth level."""


def _binary_level_sizes(num_classes: int) -> list[int]:
    if num_classes & (num_classes - 1):
        raise ValueError(
            f"binary growth needs a power of two classes (1, 2, 4, 8, ...), got {num_classes}; "
            "use mode 'flat' for other counts"
        )
    return [2**level for level in range(int(math.log2(num_classes)) + 1)]


def flat_level_sizes(num_classes: int) -> list[int]:
    """Class counts of the flat levels: powers of two below ``num_classes``, then it."""
    sizes = [1]
    while sizes[-1] * 2 < num_classes:
        sizes.append(sizes[-1] * 2)
    if num_classes > 1:
        sizes.append(num_classes)
    return sizes


def _leaf_minima(children: np.ndarray, num_leaves: int) -> np.ndarray:
    """Smallest leaf index under every node of a merge tree (leaves, then merges in order)."""
    minima = np.empty(num_leaves + len(children), dtype=np.int64)
    minima[:num_leaves] = np.arange(num_leaves)
    for merge, (left, right) in enumerate(children):
        minima[num_leaves + merge] = min(minima[left], minima[right])
    return minima


def _leaves_below(node: int, children: np.ndarray, num_leaves: int) -> list[int]:
    leaves, stack = [], [node]
    while stack:
        current = stack.pop()
        if current < num_leaves:
            leaves.append(current)
        else:
            stack.extend(children[current - num_leaves])
    return leaves


def _labels_from_nodes(
    level_nodes: list[list[int]], children: np.ndarray, num_leaves: int
) -> np.ndarray:
    labels = np.empty((len(level_nodes), num_leaves), dtype=np.int64)
    for level, nodes in enumerate(level_nodes):
        for class_index, node in enumerate(nodes):
            labels[level, _leaves_below(node, children, num_leaves)] = class_index
    return labels


def binary_levels_from_tree(
    children: np.ndarray, num_leaves: int, num_levels: int
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Nested binary levels of a merge tree: every class splits at its own top merge.

    ``children`` is scikit-learn's ``children_`` array ``[num_leaves - 1, 2]``, where node
    ``num_leaves + i`` merges ``children[i]``. A class that is a single leaf keeps one child.
    Children are ordered by their smallest leaf index, so the numbering does not depend on
    the order of the two entries in ``children``.

    Returns ``(labels [num_levels, num_leaves], parents)``.
    """
    children = np.asarray(children, dtype=np.int64).reshape(-1, 2)
    minima = _leaf_minima(children, num_leaves)
    root = num_leaves + len(children) - 1 if len(children) else 0
    level_nodes, parents = [[root]], [np.array([-1])]
    for _ in range(1, num_levels):
        nodes, level_parents = [], []
        for parent_index, node in enumerate(level_nodes[-1]):
            if node < num_leaves:
                split = [node]
            else:
                split = sorted(children[node - num_leaves], key=lambda child: minima[child])
            nodes.extend(split)
            level_parents.extend([parent_index] * len(split))
        level_nodes.append(nodes)
        parents.append(np.array(level_parents))
    return _labels_from_nodes(level_nodes, children, num_leaves), tuple(parents)


def flat_levels_from_tree(
    children: np.ndarray, num_leaves: int, level_sizes: Sequence[int]
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Flat cuts of a merge tree at each size in ``level_sizes``, as nested levels.

    The cut at ``k`` clusters undoes the last ``k - 1`` merges, which is what scikit-learn's
    ``AgglomerativeClustering(n_clusters=k)`` returns. Cuts at increasing ``k`` are nested;
    a class may then have one or several children. Sizes above ``num_leaves`` are capped.
    """
    children = np.asarray(children, dtype=np.int64).reshape(-1, 2)
    minima = _leaf_minima(children, num_leaves)
    num_nodes = num_leaves + len(children)
    parent = np.full(num_nodes, num_nodes, dtype=np.int64)  # the root's parent lies past the end
    if len(children):
        parent[children.ravel()] = np.repeat(np.arange(num_leaves, num_nodes), 2)
    node_ids = np.arange(num_nodes)
    level_nodes = []
    for size in level_sizes:
        size = min(size, num_leaves)
        first_removed = num_nodes - size + 1  # merge nodes with ids >= this are undone
        # A cluster of the cut is a kept node whose own merge into its parent was undone.
        roots = node_ids[(node_ids < first_removed) & (parent >= first_removed)]
        level_nodes.append(roots.tolist())

    labels = _labels_from_nodes(level_nodes, children, num_leaves)
    # Renumber every level so that classes are grouped by parent, then by smallest leaf.
    parents = [np.array([-1])]
    for level in range(1, len(level_nodes)):
        previous = labels[level - 1]
        nodes = level_nodes[level]
        parent_of = [previous[minima[node]] for node in nodes]
        order = sorted(range(len(nodes)), key=lambda k: (parent_of[k], minima[nodes[k]]))
        renumber = np.empty(len(nodes), dtype=np.int64)
        renumber[order] = np.arange(len(nodes))
        labels[level] = renumber[labels[level]]
        parents.append(np.array([parent_of[k] for k in order], dtype=np.int64))
    return labels, tuple(parents)


def _assign_to_nearest_means(
    features: torch.Tensor,
    indices: np.ndarray,
    labels: np.ndarray,
    parents: Sequence[np.ndarray],
    chunk_size: int = 65536,
) -> None:
    """Label ``features[indices]`` level by level with the nearest class mean among the
    children of the image's class at the previous level, which keeps the levels nested.
    Class means come from the already labelled images; ``labels`` is updated in place.
    """
    labelled = np.setdiff1d(np.arange(labels.shape[1]), indices)
    labelled_features = features[torch.as_tensor(labelled)].double()
    labels[0, indices] = 0
    for level in range(1, labels.shape[0]):
        level_labels = torch.as_tensor(labels[level, labelled])
        num_classes = len(parents[level])
        sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64)
        sums.index_add_(0, level_labels, labelled_features)
        counts = torch.bincount(level_labels, minlength=num_classes).double().unsqueeze(1)
        means = (sums / counts).float()
        class_parents = torch.as_tensor(parents[level])
        for start in range(0, len(indices), chunk_size):
            rows = indices[start : start + chunk_size]
            chunk = features[torch.as_tensor(rows)].float()
            distances = torch.cdist(chunk, means)  # [chunk, num_classes]
            previous = torch.as_tensor(labels[level - 1, rows])
            allowed = class_parents.unsqueeze(0) == previous.unsqueeze(1)
            distances = distances.masked_fill(~allowed, float("inf"))
            labels[level, rows] = distances.argmin(dim=1).numpy()


WARD_ALGORITHMS = ("auto", "exact", "microclusters", "subset")


class WardPartitioner(Partitioner):
    """Ward agglomerative clustering of image features into nested levels.

    Parameters
    ----------
    num_classes : int
        Classes at the last level. A power of two in ``"binary"`` mode.
    mode : {"binary", "flat"}
        ``"binary"``: every class splits at its own top merge in the Ward tree, so levels have
        1, 2, 4, ... classes and every class of two or more images has exactly two children.
        ``"flat"``: each level is the cut of the tree at 1, 2, 4, ..., ``num_classes``
        clusters, the clustering that a single run with that many classes would use.
    max_exact_size : int
        Exact Ward needs memory quadratic in the number of images (about 3.3 GB at 20,000).
        With ``algorithm="auto"``, larger sets use micro-clusters.
    algorithm : {"auto", "exact", "microclusters", "subset"}
        ``"exact"``: scikit-learn's Ward tree of all images. ``"microclusters"``: FAISS
        k-means into ``num_microclusters`` clusters, then exact Ward on their centroids
        weighted by size; every image takes its micro-cluster's class. ``"subset"``: exact
        Ward on ``max_exact_size`` random images, and every other image joins, level by level,
        the nearest class mean among the children of its class. ``"auto"``: exact up to
        ``max_exact_size`` images, micro-clusters above.
    num_microclusters : int
        k-means clusters of the micro-cluster algorithm. With at least as many clusters as
        images, the result equals exact Ward.
    seed : int
        Seed of k-means and of the random subset.

    Attributes
    ----------
    children_ : np.ndarray
        The merge tree of the last fit (scikit-learn's ``children_`` format) over its leaves:
        images, subset images or micro-clusters.
    algorithm_ : str
        The algorithm the last fit used.
    subset_ : np.ndarray or None
        Indices of the images Ward ran on with ``"subset"``, else None.
    microcluster_labels_ : np.ndarray or None
        Micro-cluster of every image with ``"microclusters"``, else None.
    """

    def __init__(
        self,
        num_classes: int = 4,
        mode: Literal["binary", "flat"] = "binary",
        max_exact_size: int = 20_000,
        seed: int = 0,
        algorithm: str = "auto",
        num_microclusters: int = 2048,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if mode not in ("binary", "flat"):
            raise ValueError(f"mode must be 'binary' or 'flat', got {mode!r}")
        if max_exact_size < 2:
            raise ValueError(f"max_exact_size must be at least 2, got {max_exact_size}")
        if algorithm not in WARD_ALGORITHMS:
            raise ValueError(f"algorithm must be one of {WARD_ALGORITHMS}, got {algorithm!r}")
        if num_microclusters < num_classes:
            raise ValueError(
                f"num_microclusters ({num_microclusters}) must be at least num_classes ({num_classes})"
            )
        self.level_sizes = (
            _binary_level_sizes(num_classes) if mode == "binary" else flat_level_sizes(num_classes)
        )
        self.num_classes = num_classes
        self.mode = mode
        self.max_exact_size = max_exact_size
        self.seed = seed
        self.algorithm = algorithm
        self.num_microclusters = num_microclusters

    def _levels(self, children: np.ndarray, num_leaves: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        if self.mode == "binary":
            return binary_levels_from_tree(children, num_leaves, len(self.level_sizes))
        return flat_levels_from_tree(children, num_leaves, self.level_sizes)

    def fit(self, features: torch.Tensor) -> Partition:
        features = torch.as_tensor(features).detach().cpu()
        num_images = features.shape[0]
        if num_images < 1:
            raise ValueError("cannot partition an empty feature set")
        if num_images < self.num_classes:
            logger.warning(
                "only %d images for %d classes; some classes will not split", num_images,
                self.num_classes,
            )
        algorithm = self.algorithm
        if algorithm == "auto":
            algorithm = "exact" if num_images <= self.max_exact_size else "microclusters"
        self.algorithm_ = algorithm
        self.subset_ = None
        self.microcluster_labels_ = None

        if algorithm == "microclusters":
            return self._fit_microclusters(features)
        if algorithm == "subset" and num_images > self.max_exact_size:
            return self._fit_subset(features)
        if num_images > self.max_exact_size:
            logger.warning(
                "exact Ward on %d images needs about %.1f GB (max_exact_size is %d)",
                num_images, 8.3e-9 * num_images**2, self.max_exact_size,
            )
        self.children_ = _exact_ward_tree(features)
        labels, parents = self._levels(self.children_, num_images)
        return Partition(labels, parents)

    def _fit_subset(self, features: torch.Tensor) -> Partition:
        num_images = features.shape[0]
        generator = np.random.default_rng(self.seed)
        subset = np.sort(generator.choice(num_images, self.max_exact_size, replace=False))
        logger.info(
            "Ward on a random subset of %d of %d images (max_exact_size); the other images "
            "join the nearest class mean at each level",
            self.max_exact_size,
            num_images,
        )
        self.subset_ = subset
        self.children_ = _exact_ward_tree(features[torch.as_tensor(subset)])
        subset_labels, parents = self._levels(self.children_, len(subset))
        labels = np.full((len(parents), num_images), -1, dtype=np.int64)
        labels[:, subset] = subset_labels
        rest = np.setdiff1d(np.arange(num_images), subset)
        _assign_to_nearest_means(features, rest, labels, parents)
        return Partition(labels, parents)

    def _fit_microclusters(self, features: torch.Tensor) -> Partition:
        from .ward import microclusters, weighted_ward_tree

        num_images = features.shape[0]
        logger.info(
            "Ward on %d k-means micro-clusters of %d images", min(self.num_microclusters, num_images),
            num_images,
        )
        assignment, centroids, sizes = microclusters(
            features.float().numpy(), self.num_microclusters, seed=self.seed
        )
        self.microcluster_labels_ = assignment
        self.children_ = weighted_ward_tree(centroids, sizes)
        cluster_labels, parents = self._levels(self.children_, len(centroids))
        return Partition(cluster_labels[:, assignment], parents)


def _exact_ward_tree(features: torch.Tensor) -> np.ndarray:
    from sklearn.cluster import ward_tree

    if len(features) < 2:
        return np.empty((0, 2), dtype=np.int64)
    with warnings.catch_warnings():
        # SciPy warns when a square observation matrix could be a distance matrix;
        # ward_tree always passes observations.
        warnings.filterwarnings("ignore", message=".*uncondensed distance matrix")
        children, _, _, _ = ward_tree(features.double().numpy())
    return children


def _normalise_tree(tree: PromptTree) -> PromptTree:
    if isinstance(tree, str):
        if not tree.strip():
            raise ValueError("prompts must be non-empty strings")
        return tree
    items = list(tree)
    if not 1 <= len(items) <= 2:
        raise ValueError(
            f"each node of a prompt hierarchy must have one or two children, got {len(items)}: "
            f"{items!r}"
        )
    return [_normalise_tree(item) for item in items]


def _tree_leaves(tree: PromptTree) -> list[str]:
    if isinstance(tree, str):
        return [tree]
    return [leaf for child in tree for leaf in _tree_leaves(child)]


def _tree_depth(tree: PromptTree) -> int:
    if isinstance(tree, str):
        return 0
    return 1 + max(_tree_depth(child) for child in tree)


def ward_pairing(means: np.ndarray, sizes: np.ndarray) -> list[list[int]]:
    """Pair clusters greedily by Ward cost and return the pairs (a singleton when odd).

    The cost of merging i and j is ``n_i n_j / (n_i + n_j) * ||mu_i - mu_j||^2``. The
    cheapest remaining pair is taken first; ties go to the lowest indices.
    """
    count = len(means)
    unpaired = list(range(count))
    pairs = []
    while len(unpaired) > 1:
        best = None
        for a_pos, a in enumerate(unpaired):
            for b in unpaired[a_pos + 1 :]:
                cost = sizes[a] * sizes[b] / (sizes[a] + sizes[b]) * float(
                    np.sum((means[a] - means[b]) ** 2)
                )
                if best is None or cost < best[0]:
                    best = (cost, a, b)
        _, a, b = best
        pairs.append([a, b])
        unpaired.remove(a)
        unpaired.remove(b)
    if unpaired:
        pairs.append(unpaired)
    return pairs


class PromptPartitioner(Partitioner):
    """Hand-defined classes: each image joins the prompt of highest cosine similarity.

    Parameters
    ----------
    prompts : sequence of str, optional
        Leaf prompts, one class each. Upper levels pair the leaf classes greedily by Ward cost
        on their class means (:func:`ward_pairing`), so 4 prompts give levels of 1, 2 and 4
        classes.
    hierarchy : nested sequences of str, optional
        The prompts as a binary hierarchy, for example
        ``[["man with a smile", "man with a neutral face"], ["woman ...", "woman ..."]]``.
        Nodes have one or two children; a leaf shallower than the deepest one keeps a single
        child at the deeper levels.
    embedder : Embedder, optional
        Embeds the prompts (``supports_text`` must be True). Not needed with ``text_features``.
    templates : sequence of str
        Templates with one ``{}``; each prompt's embedding is averaged over them.
    text_features : torch.Tensor, optional
        Precomputed prompt embeddings ``[num_prompts, D]`` in leaf order.

    Attributes
    ----------
    leaf_prompts_ : list of str
        The leaf prompts in class order of the last level.
    """

    def __init__(
        self,
        prompts: Sequence[str] | None = None,
        hierarchy: PromptTree | None = None,
        embedder=None,
        templates: Sequence[str] = ("a photo of a {}.",),
        text_features: torch.Tensor | None = None,
    ) -> None:
        if (prompts is None) == (hierarchy is None):
            raise ValueError("pass exactly one of prompts or hierarchy")
        if prompts is not None:
            prompts = [_normalise_tree(prompt) for prompt in prompts]
            if not prompts:
                raise ValueError("prompts must not be empty")
            self.hierarchy = None
            self.leaves = list(prompts)
        else:
            self.hierarchy = _normalise_tree(hierarchy)
            if isinstance(self.hierarchy, str):
                self.hierarchy = [self.hierarchy]
            self.leaves = _tree_leaves(self.hierarchy)
        duplicates = sorted({p for p in self.leaves if self.leaves.count(p) > 1})
        if duplicates:
            raise ValueError(f"duplicate prompts: {duplicates}")
        if text_features is None:
            if embedder is None or not getattr(embedder, "supports_text", False):
                raise ValueError(
                    "PromptPartitioner needs an embedder that embeds text (for example "
                    "OpenClipEmbedder) or precomputed text_features"
                )
        elif text_features.shape[0] != len(self.leaves):
            raise ValueError(
                f"text_features has {text_features.shape[0]} rows for {len(self.leaves)} prompts"
            )
        self.embedder = embedder
        self.templates = list(templates)
        self.text_features = text_features

    def fit(self, features: torch.Tensor) -> Partition:
        text = self.text_features
        if text is None:
            text = self.embedder.embed_text(self.leaves, templates=self.templates)
        text = F.normalize(text.detach().float().cpu(), dim=-1)
        images = F.normalize(torch.as_tensor(features).detach().float().cpu(), dim=-1)
        leaf_labels = (images @ text.T).argmax(dim=1).numpy()  # [N], ties go to the first prompt

        sizes = np.bincount(leaf_labels, minlength=len(self.leaves))
        empty = [self.leaves[k] for k in np.flatnonzero(sizes == 0)]
        if empty:
            raise ValueError(
                f"no image is closest to prompts {empty}; remove or rephrase them so every "
                "discriminator has real images"
            )
        for prompt, size in zip(self.leaves, sizes):
            logger.info("prompt %r: %d images", prompt, size)

        tree = self.hierarchy
        if tree is None:
            tree = self._pair_by_ward(features, leaf_labels, sizes)
        return self._levels_from_prompt_tree(tree, leaf_labels)

    def _pair_by_ward(
        self, features: torch.Tensor, leaf_labels: np.ndarray, sizes: np.ndarray
    ) -> PromptTree:
        feats = torch.as_tensor(features).detach().double().cpu().numpy()
        nodes: list[PromptTree] = list(self.leaves)
        means = np.stack([feats[leaf_labels == k].mean(axis=0) for k in range(len(nodes))])
        weights = sizes.astype(np.float64)
        while len(nodes) > 1:
            pairs = ward_pairing(means, weights)
            nodes = [[nodes[i] for i in pair] if len(pair) > 1 else [nodes[pair[0]]] for pair in pairs]
            means = np.stack([
                np.average(means[pair], axis=0, weights=weights[pair]) for pair in pairs
            ])
            weights = np.array([weights[pair].sum() for pair in pairs])
        return nodes[0]

    def _levels_from_prompt_tree(self, tree: PromptTree, leaf_labels: np.ndarray) -> Partition:
        depth = _tree_depth(tree)
        leaf_index = {prompt: k for k, prompt in enumerate(self.leaves)}
        level_nodes: list[list[PromptTree]] = [[tree]]
        parents = [np.array([-1])]
        for _ in range(depth):
            nodes, level_parents = [], []
            for parent_index, node in enumerate(level_nodes[-1]):
                split = [node] if isinstance(node, str) else list(node)
                nodes.extend(split)
                level_parents.extend([parent_index] * len(split))
            level_nodes.append(nodes)
            parents.append(np.array(level_parents))

        labels = np.empty((depth + 1, len(leaf_labels)), dtype=np.int64)
        names = []
        for level, nodes in enumerate(level_nodes):
            class_of_leaf = np.empty(len(self.leaves), dtype=np.int64)
            for class_index, node in enumerate(nodes):
                for leaf in _tree_leaves(node):
                    class_of_leaf[leaf_index[leaf]] = class_index
            labels[level] = class_of_leaf[leaf_labels]
            names.append(tuple(" | ".join(_tree_leaves(node)) for node in nodes))
        self.leaf_prompts_ = [nodes for nodes in level_nodes[-1]]
        return Partition(labels, tuple(parents), tuple(names))
