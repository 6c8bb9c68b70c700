import logging

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import pdist
from sklearn.cluster import AgglomerativeClustering

from mdgan.partitioners import (
    Partition,
    PromptPartitioner,
    WardPartitioner,
    flat_level_sizes,
    ward_pairing,
)


def assert_same_clusters(labels: np.ndarray, reference: np.ndarray) -> None:
    """Labels equal up to renaming: a one-to-one map between the two sets of names."""
    forward, backward = {}, {}
    for ours, theirs in zip(labels.tolist(), reference.tolist()):
        assert forward.setdefault(ours, theirs) == theirs
        assert backward.setdefault(theirs, ours) == ours


def feature_sets(min_size=2, max_size=40):
    shapes = st.tuples(st.integers(min_size, max_size), st.integers(1, 4))
    return shapes.flatmap(
        lambda shape: arrays(
            np.float64,
            shape,
            elements=st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32),
        )
    )


def assert_nested(partition: Partition) -> None:
    for level in range(1, partition.num_levels):
        parents = partition.parents[level]
        assert np.array_equal(parents[partition.labels[level]], partition.labels[level - 1])


@settings(max_examples=60, deadline=None)
@given(feature_sets(), st.sampled_from([2, 3, 4, 6, 8]))
def test_flat_ward_matches_sklearn(features, num_classes):
    partition = WardPartitioner(num_classes, mode="flat").fit(torch.from_numpy(features))
    for level, size in enumerate(flat_level_sizes(num_classes)):
        size = min(size, len(features))
        if size == 1:
            assert (partition.labels[level] == 0).all()
            continue
        reference = AgglomerativeClustering(n_clusters=size, linkage="ward").fit(features).labels_
        assert_same_clusters(partition.labels[level], reference)


@settings(max_examples=60, deadline=None)
@given(feature_sets(min_size=2))
def test_binary_level_one_is_flat_cut_at_two(features):
    binary = WardPartitioner(4, mode="binary").fit(torch.from_numpy(features))
    reference = AgglomerativeClustering(n_clusters=2, linkage="ward").fit(features).labels_
    assert_same_clusters(binary.labels[1], reference)


@settings(max_examples=60, deadline=None)
@given(feature_sets(min_size=1), st.sampled_from(["binary", "flat"]), st.sampled_from([2, 4, 8]))
def test_levels_nested_every_mode(features, mode, num_classes):
    partition = WardPartitioner(num_classes, mode=mode).fit(torch.from_numpy(features))
    assert partition.num_images == len(features)
    assert_nested(partition)


@settings(max_examples=60, deadline=None)
@given(feature_sets(min_size=1), st.sampled_from([2, 4, 8]))
def test_binary_classes_split_in_two(features, num_classes):
    partition = WardPartitioner(num_classes, mode="binary").fit(torch.from_numpy(features))
    assert partition.num_levels == int(np.log2(num_classes)) + 1
    for level in range(partition.num_levels - 1):
        sizes = partition.class_sizes(level)
        for class_index, size in enumerate(sizes):
            children = partition.children(level, class_index)
            assert len(children) == (2 if size >= 2 else 1)
            child_sizes = partition.class_sizes(level + 1)[children]
            assert (child_sizes > 0).all()


def test_flat_class_may_have_one_or_three_children():
    # Two tight far-apart groups of three: the cut at 4 splits one group into three points
    # while the other stays whole, so level 2 has classes with one and with three children.
    features = torch.tensor(
        [[0.0], [0.0], [0.0], [100.0], [101.0], [103.0]]
    )
    partition = WardPartitioner(4, mode="flat").fit(features)
    children_counts = sorted(len(partition.children(1, c)) for c in range(2))
    assert children_counts == [1, 3]


def test_ward_subset_assigns_rest_nested(caplog):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 10
    features = torch.from_numpy(np.concatenate([c + rng.normal(size=(150, 8)) for c in centres]))
    with caplog.at_level(logging.INFO, logger="mdgan.partitioners"):
        partition = WardPartitioner(4, max_exact_size=100, seed=1, algorithm="subset").fit(features)
    assert "random subset of 100 of 600" in caplog.text
    assert (partition.labels >= 0).all()
    assert_nested(partition)
    exact = WardPartitioner(4).fit(features)
    assert_same_clusters(partition.labels[2], exact.labels[2])


def test_binary_needs_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        WardPartitioner(6, mode="binary")


def test_partition_rejects_non_nested_levels():
    labels = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 2, 3]])
    parents = (np.array([-1]), np.array([0, 0]), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="not nested"):
        Partition(labels, parents)


def test_partition_round_trip_tensors():
    partition = WardPartitioner(4).fit(torch.randn(50, 3))
    restored = Partition.from_tensors(partition.to_tensors(), partition.class_names)
    assert np.array_equal(restored.labels, partition.labels)
    for ours, theirs in zip(restored.parents, partition.parents):
        assert np.array_equal(ours, theirs)


def test_class_means_match_numpy():
    features = torch.randn(40, 5)
    partition = WardPartitioner(4).fit(features)
    means = partition.class_means(features, 2)
    for c in range(partition.num_classes(2)):
        expected = features[torch.from_numpy(partition.labels[2] == c)].mean(dim=0)
        assert torch.allclose(means[c], expected, atol=1e-6)


def test_ward_pairing_pairs_closest():
    means = np.array([[0.0], [10.0], [0.5], [10.5]])
    pairs = ward_pairing(means, np.ones(4))
    assert sorted(sorted(p) for p in pairs) == [[0, 2], [1, 3]]


def prompt_setup():
    # Four prompt directions; each image is a noisy copy of one of them.
    text = torch.eye(4, 6)
    rng = torch.Generator().manual_seed(0)
    owners = torch.arange(40) % 4
    images = text[owners] + 0.05 * torch.randn(40, 6, generator=rng)
    return text, images, owners


def test_prompts_assign_highest_cosine():
    text, images, owners = prompt_setup()
    prompts = ["man smiling", "man neutral", "woman smiling", "woman neutral"]
    partition = PromptPartitioner(prompts, text_features=text).fit(images)
    leaf_level = partition.num_levels - 1
    names = partition.class_names[leaf_level]
    assigned = [names[c] for c in partition.labels[leaf_level]]
    assert assigned == [prompts[o] for o in owners.tolist()]
    assert [partition.num_classes(level) for level in range(partition.num_levels)] == [1, 2, 4]
    assert_nested(partition)


def test_prompt_hierarchy_sets_upper_levels():
    text, images, owners = prompt_setup()
    hierarchy = [["man smiling", "woman smiling"], ["man neutral", "woman neutral"]]
    # text rows follow the leaf order of the hierarchy
    leaf_text = text[[0, 2, 1, 3]]
    partition = PromptPartitioner(hierarchy=hierarchy, text_features=leaf_text).fit(images)
    assert partition.class_names[1] == ("man smiling | woman smiling", "man neutral | woman neutral")
    smiling = np.isin(owners.numpy(), [0, 2])
    assert (partition.labels[1][smiling] == 0).all()
    assert (partition.labels[1][~smiling] == 1).all()


def test_prompt_with_no_images_is_an_error():
    text = torch.eye(3, 4)
    images = text[[0, 1, 0, 1]]
    with pytest.raises(ValueError, match="no image is closest to prompts \\['c'\\]"):
        PromptPartitioner(["a", "b", "c"], text_features=text).fit(images)


def test_prompt_hierarchy_rejects_three_children():
    with pytest.raises(ValueError, match="one or two children"):
        PromptPartitioner(hierarchy=[["a", "b", "c"]], text_features=torch.eye(3))


def distinct_feature_sets(max_size=40):
    """Feature sets whose coordinates are all different, so duplicate points cannot occur."""
    shapes = st.tuples(st.integers(2, max_size), st.integers(1, 4))
    return shapes.flatmap(
        lambda shape: arrays(
            np.float64,
            shape,
            elements=st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32),
            unique=True,
        )
    )


@settings(max_examples=40, deadline=None)
@given(distinct_feature_sets(), st.sampled_from(["binary", "flat"]))
def test_microclusters_equal_exact_when_one_per_point(features, mode):
    # With tied merge costs (duplicate points, equal distances) Ward may merge either pair, so
    # two correct implementations can cut differently. Compare them on tie-free sets only.
    distances = pdist(features)
    assume(len(np.unique(distances)) == len(distances))
    tensor = torch.from_numpy(features)
    exact = WardPartitioner(8, mode=mode, algorithm="exact").fit(tensor)
    micro = WardPartitioner(
        8, mode=mode, algorithm="microclusters", num_microclusters=len(features) + 8
    ).fit(tensor)
    for level in range(exact.num_levels):
        assert_same_clusters(micro.labels[level], exact.labels[level])


def test_microclusters_keep_nested_binary_levels():
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.normal(size=(3000, 16)).astype(np.float32))
    partitioner = WardPartitioner(8, algorithm="microclusters", num_microclusters=64)
    partition = partitioner.fit(features)
    assert partitioner.algorithm_ == "microclusters"
    assert [partition.num_classes(level) for level in range(partition.num_levels)] == [1, 2, 4, 8]
    assert_nested(partition)
    for level in range(partition.num_levels - 1):
        for class_index in range(partition.num_classes(level)):
            assert len(partition.children(level, class_index)) == 2
    # Every image has the class of its micro-cluster.
    clusters = partitioner.microcluster_labels_
    for cluster in np.unique(clusters):
        assert len(np.unique(partition.labels[3][clusters == cluster])) == 1


def test_auto_algorithm_switches_at_max_exact_size():
    features = torch.randn(300, 4)
    small = WardPartitioner(4, max_exact_size=300)
    small.fit(features)
    assert small.algorithm_ == "exact"
    large = WardPartitioner(4, max_exact_size=299, num_microclusters=32)
    large.fit(features)
    assert large.algorithm_ == "microclusters"


def test_weighted_ward_matches_merging_by_hand():
    from mdgan.ward import weighted_ward_tree

    # Clusters at 0 (size 3), 1 (size 1) and 10 (size 1): costs 3/4*1 < 1/2*81 < ..., so
    # 0 and 1 merge first, then the merged cluster at 0.25 (size 4) with 10.
    children = weighted_ward_tree(np.array([[0.0], [1.0], [10.0]]), np.array([3, 1, 1]))
    assert children.tolist() == [[0, 1], [3, 2]]
    # Weights change the order: a heavy cluster far away pulls its neighbour first.
    children = weighted_ward_tree(np.array([[0.0], [1.0], [3.0]]), np.array([1, 1, 100]))
    assert sorted(children[0].tolist()) == [0, 1]
    children = weighted_ward_tree(np.array([[0.0], [2.5], [3.0]]), np.array([1, 100, 1]))
    assert sorted(children[0].tolist()) == [1, 2]


def test_class_means_of_empty_class_is_an_error():
    partition = Partition(np.array([[0, 0], [0, 0]]), (np.array([-1]), np.array([0, 0])))
    with pytest.raises(ValueError, match=r"classes \[1\] of level 1 have no images"):
        partition.class_means(torch.zeros(2, 3), 1)
