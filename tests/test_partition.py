"""Client partitions: complete, disjoint, seeded, and skewed as the Dirichlet alpha says."""

import numpy as np
import pytest
from datasets import ClassLabel, Dataset

from federa.config import PartitionConfig
from federa.builtin_data import bbc_news_dataset
from federa.errors import DataError
from federa.partition import label_skew, partition_indices, partition_stats


@pytest.fixture(scope="module")
def bbc():
    return bbc_news_dataset()  # 2,225 real articles, 5 topics


def _skew(ds, parts):
    labels = np.asarray(ds["label"])
    return label_skew(np.stack([np.bincount(labels[p], minlength=5) for p in parts]))


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "shards", "size"])
def test_every_example_in_exactly_one_client(bbc, kind):
    parts = partition_indices(bbc, PartitionConfig(kind=kind), num_clients=10, seed=0)
    allidx = np.concatenate(parts)
    assert len(allidx) == len(bbc)
    assert np.array_equal(np.sort(allidx), np.arange(len(bbc)))


def test_dirichlet_skew_grows_as_alpha_shrinks(bbc):
    skews = {a: _skew(bbc, partition_indices(bbc, PartitionConfig(alpha=a), 10, seed=0)) for a in (0.1, 0.5, 5.0)}
    iid = _skew(bbc, partition_indices(bbc, PartitionConfig(kind="iid"), 10, seed=0))
    assert skews[0.1] > skews[0.5] > skews[5.0] > iid
    assert skews[0.1] > 0.5  # most of each client's mass sits on one or two topics
    assert iid < 0.1  # IID: only multinomial noise (~0.06 for 10 clients of ~180 examples)


def test_iid_histograms_are_near_uniform(bbc):
    parts = partition_indices(bbc, PartitionConfig(kind="iid"), 5, seed=0)
    stats = partition_stats(np.asarray(bbc["label"]), parts, bbc.features["label"].names)
    sizes = [c["num_examples"] for c in stats["clients"]]
    assert max(sizes) - min(sizes) <= 1
    global_p = np.bincount(bbc["label"]) / len(bbc)
    for c in stats["clients"]:
        p = np.asarray(c["label_counts"]) / c["num_examples"]
        assert np.abs(p - global_p).max() < 0.06


def test_same_seed_same_split_other_seed_other_split(bbc):
    a = partition_indices(bbc, PartitionConfig(alpha=0.5), 8, seed=3)
    b = partition_indices(bbc, PartitionConfig(alpha=0.5), 8, seed=3)
    c = partition_indices(bbc, PartitionConfig(alpha=0.5), 8, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c))


def test_size_partition_follows_weights(bbc):
    parts = partition_indices(bbc, PartitionConfig(kind="size", sizes=[1, 1, 2]), 3, seed=0)
    sizes = [len(p) for p in parts]
    assert sum(sizes) == len(bbc)
    assert abs(sizes[2] - 2 * sizes[0]) <= 2


def test_too_many_clients_is_a_clear_error():
    ds = Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 0]}).cast_column("label", ClassLabel(names=["x", "y"]))
    with pytest.raises(DataError, match="num_clients=5 exceeds the 3 training examples"):
        partition_indices(ds, PartitionConfig(kind="iid"), 5, seed=0)


def test_empty_client_names_alpha_and_num_clients(bbc):
    small = bbc.select(range(0, 2225, 20))  # 112 examples
    with pytest.raises(DataError, match=r"alpha=0\.01.*num_clients=50|num_clients=50.*alpha"):
        partition_indices(small, PartitionConfig(alpha=0.01, min_examples=1), 50, seed=0)
