"""Ward clustering for feature sets too large for the exact O(N^2)-memory algorithm.

The features are first summarised by FAISS k-means into micro-clusters, then Ward's method
runs exactly on the micro-clusters, each weighted by its size. Ward's merge cost of two
clusters depends only on their sizes and centroids,
``|Ci||Cj| / (|Ci| + |Cj|) * ||mu_i - mu_j||^2``, so starting from weighted centroids gives the
same tree as starting from the points whenever every micro-cluster is a single point.

The weighted tree is built with the nearest-neighbour chain algorithm in O(K^2 D) time and
O(K D) memory for K micro-clusters of dimension D. Ward's cost is reducible, so merging
reciprocal nearest neighbours in any order and then sorting the merges by cost gives the
greedy merge sequence.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

__all__ = ["microclusters", "weighted_ward_tree"]

logger = logging.getLogger(__name__)


def weighted_ward_tree(centroids: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Return the Ward merge tree of weighted points in scikit-learn's ``children_`` format.

    Parameters
    ----------
    centroids : np.ndarray
        ``[K, D]`` cluster centroids.
    sizes : np.ndarray
        ``[K]`` positive cluster sizes (weights).

    Returns
    -------
    np.ndarray
        int64 ``[K - 1, 2]``: row ``i`` contains the two nodes merged into node ``K + i``, where
        nodes ``0 .. K-1`` are the input clusters. Merges are in increasing order of cost.
    """
    centroids = np.array(centroids, dtype=np.float64)
    sizes = np.array(sizes, dtype=np.float64)
    count = len(centroids)
    if count != len(sizes):
        raise ValueError(f"{count} centroids but {len(sizes)} sizes")
    if count == 0:
        raise ValueError("weighted_ward_tree needs at least one cluster")
    if (sizes <= 0).any():
        raise ValueError("cluster sizes must be positive")
    if count == 1:
        return np.empty((0, 2), dtype=np.int64)

    active = np.ones(count, dtype=bool)
    merges: list[tuple[float, int, int]] = []  # (cost, kept slot, absorbed slot)
    chain: list[int] = []
    remaining = count
    while remaining > 1:
        if not chain:
            chain.append(int(np.flatnonzero(active)[0]))
        current = chain[-1]
        candidates = np.flatnonzero(active)
        candidates = candidates[candidates != current]
        differences = centroids[candidates] - centroids[current]
        distances = np.einsum("ij,ij->i", differences, differences)
        costs = sizes[current] * sizes[candidates] / (sizes[current] + sizes[candidates]) * distances
        best = int(np.argmin(costs))
        nearest, best_cost = int(candidates[best]), costs[best]
        # On ties, prefer the previous chain element: the chain then never cycles, because
        # each step strictly lowers the cost unless it returns to that element.
        if len(chain) > 1:
            previous = chain[-2]
            previous_cost = costs[np.searchsorted(candidates, previous)]
            if previous_cost <= best_cost:
                nearest, best_cost = previous, previous_cost
        if len(chain) > 1 and nearest == chain[-2]:
            chain.pop()
            chain.pop()
            total = sizes[current] + sizes[nearest]
            # The merged cluster lives in the slot of the lower index.
            kept, absorbed = min(current, nearest), max(current, nearest)
            centroids[kept] = (sizes[current] * centroids[current] + sizes[nearest] * centroids[nearest]) / total
            sizes[kept] = total
            active[absorbed] = False
            merges.append((float(best_cost), kept, absorbed))
            remaining -= 1
        else:
            chain.append(nearest)

    # Sort by cost (stable, so ties keep the order found) and relabel with union-find.
    order = sorted(range(len(merges)), key=lambda index: merges[index][0])
    node_of_slot = np.arange(count, dtype=np.int64)
    children = np.empty((count - 1, 2), dtype=np.int64)
    for step, index in enumerate(order):
        _, kept, absorbed = merges[index]
        children[step] = (node_of_slot[kept], node_of_slot[absorbed])
        node_of_slot[kept] = count + step
    return children


def microclusters(
    features: np.ndarray,
    num_clusters: int,
    seed: int = 0,
    iterations: int = 20,
    max_points_per_centroid: int = 64,
    chunk_size: int = 65536,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Summarise features by FAISS k-means.

    Returns ``(assignment [N], centroids [K', D], sizes [K'])`` where ``K' <= num_clusters``
    counts the non-empty clusters and the centroids are the exact means of their points. With
    ``num_clusters >= N`` every point is its own cluster.

    k-means trains on at most ``max_points_per_centroid * num_clusters`` points drawn at random,
    then every point is assigned to its nearest centroid in chunks, so memory beyond the
    features stays at O(chunk_size * num_clusters + num_clusters * D).
    """
    import faiss

    features = np.ascontiguousarray(features, dtype=np.float32)
    count, dim = features.shape
    if num_clusters >= count:
        return (
            np.arange(count, dtype=np.int64),
            features.astype(np.float64),
            np.ones(count, dtype=np.int64),
        )

    kmeans = faiss.Kmeans(
        dim,
        num_clusters,
        niter=iterations,
        seed=seed,
        max_points_per_centroid=max_points_per_centroid,
        # FAISS warns below 39 points per centroid; micro-clusters are meant to be small.
        min_points_per_centroid=1,
        verbose=False,
    )
    kmeans.train(features)

    assignment = np.empty(count, dtype=np.int64)
    for start in range(0, count, chunk_size):
        _, nearest = kmeans.index.search(features[start : start + chunk_size], 1)
        assignment[start : start + chunk_size] = nearest[:, 0]

    # Exact centroids of the final assignment, accumulated in float64 chunk by chunk.
    sums = torch.zeros(num_clusters, dim, dtype=torch.float64)
    for start in range(0, count, chunk_size):
        rows = torch.from_numpy(features[start : start + chunk_size]).double()
        sums.index_add_(0, torch.from_numpy(assignment[start : start + chunk_size]), rows)
    sums = sums.numpy()
    sizes = np.bincount(assignment, minlength=num_clusters)
    kept = np.flatnonzero(sizes > 0)
    renumber = np.full(num_clusters, -1, dtype=np.int64)
    renumber[kept] = np.arange(len(kept))
    if len(kept) < num_clusters:
        logger.info("%d of %d k-means clusters are empty and dropped", num_clusters - len(kept), num_clusters)
    return renumber[assignment], sums[kept] / sizes[kept, None], sizes[kept]
