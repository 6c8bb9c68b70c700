"""A fused nearest-class-mean kernel for the CPU, compiled by Numba.

Imported only by :class:`mdgan.selectors.NumbaSelector`, so that ``import mdgan`` does not pay
for Numba's import or compilation.

The kernel reads each row from memory once. While the row is in the L1 cache, it computes the
dot products with the class means and the squared norm. From these it finds the two smallest
half squared distances up to ``||x||^2 / 2`` and whether the row is a near tie. Torch needs a
separate pass over the batch for each of these, and the selector is bound by reading the
features from memory, so one pass is what matters.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Reassociation lets LLVM vectorise the dot products. The selector's bound on rounding error
# is valid for any summation order. Without "nnan" and "ninf", NaN and infinity keep their
# IEEE meaning.
_FASTMATH = {"reassoc", "contract", "nsz"}


@njit(fastmath=_FASTMATH, inline="always")
def _keep_two_smallest(score, index, best, second, best_index):
    # Strict comparisons keep the lowest index among equal scores.
    if score < best:
        return score, best, index
    if score < second:
        return best, score, best_index
    return best, second, best_index


@njit(parallel=True, fastmath=_FASTMATH, boundscheck=False, cache=True)
def nearest_with_near_ties(features, means, half_norms, slope, offset, classes, near):
    """Fill ``classes`` (int64) and ``near`` (bool) for every row.

    ``features`` is ``[B, D]`` and ``means`` ``[K, D]``, both C-contiguous float32;
    ``half_norms[k] = ||m_k||^2 / 2``. The score of class ``k`` is ``half_norms[k] - x.m_k``,
    and ``classes`` receives the class of the smallest. A row is a near tie, to be recomputed
    exactly, when twice the difference of its two smallest scores is at most
    ``slope * ||x||^2 + offset``. Classes are taken four at a time, so each row is read from
    the cache once per four classes. The squared norm is accumulated with the first four.
    """
    rows, dim = features.shape
    num_classes = means.shape[0]
    for i in prange(rows):
        row = features[i]
        best = np.inf
        second = np.inf
        best_index = 0
        norm = np.float32(0.0)
        start = 0
        while start + 4 <= num_classes:
            m0 = means[start]
            m1 = means[start + 1]
            m2 = means[start + 2]
            m3 = means[start + 3]
            d0 = np.float32(0.0)
            d1 = np.float32(0.0)
            d2 = np.float32(0.0)
            d3 = np.float32(0.0)
            if start == 0:
                for j in range(dim):
                    value = row[j]
                    norm += value * value
                    d0 += value * m0[j]
                    d1 += value * m1[j]
                    d2 += value * m2[j]
                    d3 += value * m3[j]
            else:
                for j in range(dim):
                    value = row[j]
                    d0 += value * m0[j]
                    d1 += value * m1[j]
                    d2 += value * m2[j]
                    d3 += value * m3[j]
            best, second, best_index = _keep_two_smallest(
                half_norms[start] - d0, start, best, second, best_index
            )
            best, second, best_index = _keep_two_smallest(
                half_norms[start + 1] - d1, start + 1, best, second, best_index
            )
            best, second, best_index = _keep_two_smallest(
                half_norms[start + 2] - d2, start + 2, best, second, best_index
            )
            best, second, best_index = _keep_two_smallest(
                half_norms[start + 3] - d3, start + 3, best, second, best_index
            )
            start += 4
        if start == 0:
            for j in range(dim):
                norm += row[j] * row[j]
        while start < num_classes:
            mean = means[start]
            dot = np.float32(0.0)
            for j in range(dim):
                dot += row[j] * mean[j]
            best, second, best_index = _keep_two_smallest(
                half_norms[start] - dot, start, best, second, best_index
            )
            start += 1
        classes[i] = best_index
        # "not greater": a NaN, from overflow or from NaN features, counts as a near tie.
        near[i] = not (2.0 * (second - best) > slope * norm + offset)
