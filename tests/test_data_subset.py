"""Class-balanced, seeded training subsets."""
from __future__ import annotations

import pytest
import torch

from initlab.data import balanced_subset
from initlab.errors import ConfigError


def labels_with_counts(counts, seed=0):
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def test_equal_counts_when_divisible():
    labels = labels_with_counts([100] * 10)
    idx = balanced_subset(labels, 50, seed=0)
    assert idx.dtype == torch.int64 and len(idx) == 50 and len(set(idx.tolist())) == 50
    assert torch.bincount(labels[idx], minlength=10).tolist() == [5] * 10
    assert torch.equal(idx, torch.sort(idx).values)


def test_remainder_spread_one_each_over_distinct_classes():
    labels = labels_with_counts([100] * 10)
    counts = torch.bincount(labels[balanced_subset(labels, 57, seed=3)], minlength=10)
    assert sorted(counts.tolist()) == [5] * 3 + [6] * 7
    # deterministic for a seed, and the seed decides which classes get the extra one
    again = torch.bincount(labels[balanced_subset(labels, 57, seed=3)], minlength=10)
    assert torch.equal(counts, again)
    patterns = {tuple(torch.bincount(labels[balanced_subset(labels, 57, seed=s)], minlength=10).tolist())
                for s in range(8)}
    assert len(patterns) > 1


def test_seed_changes_the_examples_but_not_the_balance():
    labels = labels_with_counts([100] * 10)
    a = balanced_subset(labels, 100, seed=0)
    b = balanced_subset(labels, 100, seed=1)
    assert not torch.equal(a, b)
    assert torch.equal(a, balanced_subset(labels, 100, seed=0))
    assert torch.bincount(labels[b], minlength=10).tolist() == [10] * 10


def test_larger_subsets_contain_smaller_ones():
    labels = labels_with_counts([80] * 10)
    prev = set()
    for size in (10, 13, 40, 99, 400, 800):
        cur = set(balanced_subset(labels, size, seed=7).tolist())
        assert prev <= cur
        prev = cur


def test_short_class_gives_all_it_has_and_others_fill_in():
    # like MNIST's class 5: fewer examples than an equal share
    labels = labels_with_counts([50, 50, 50, 8])
    idx = balanced_subset(labels, 101, seed=0)
    counts = torch.bincount(labels[idx], minlength=4).tolist()
    assert counts[3] == 8 and sum(counts) == 101 and max(counts[:3]) - min(counts[:3]) <= 1
    # the whole dataset is a valid "subset"
    assert len(balanced_subset(labels, len(labels), seed=0)) == len(labels)


def test_errors_are_clear():
    labels = labels_with_counts([5, 5, 5])
    with pytest.raises(ConfigError, match="larger than the 15 available"):
        balanced_subset(labels, 16, seed=0)
    with pytest.raises(ConfigError, match="smaller than the number of classes"):
        balanced_subset(labels, 2, seed=0)
    with pytest.raises(ConfigError, match="integer"):
        balanced_subset(labels, 5.5, seed=0)


def test_accepts_lists_and_arrays():
    import numpy as np
    assert balanced_subset([0, 1, 0, 1], 2, seed=0).tolist() == balanced_subset(
        np.array([0, 1, 0, 1]), 2, seed=0).tolist()
