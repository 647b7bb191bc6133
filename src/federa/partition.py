"""Split the training set across clients with flwr-datasets partitioners, and describe the split.

The result is a list of index arrays into the (unshuffled) train split, so the same
partition can be written to ``partition.json``, compared across methods, and rebuilt by a
Flower node from ``partition-id`` / ``num-partitions`` and the seed alone.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    Partitioner,
    ShardPartitioner,
    SizePartitioner,
)

from federa.config import PartitionConfig
from federa.errors import DataError
from federa.methods.variants import VARIANTS, split_method

if TYPE_CHECKING:
    from federa.config import Config

_INDEX = "__federa_index__"


def _size_partition_sizes(weights: list[float] | None, n: int, total: int) -> list[int]:
    w = np.asarray(weights if weights is not None else range(1, n + 1), dtype=float)
    if (w <= 0).any():
        raise DataError("partition.sizes must all be > 0")
    sizes = np.floor(w / w.sum() * total).astype(int)
    sizes[: total - sizes.sum()] += 1  # hand out the rounding remainder so every example is used
    return sizes.tolist()


def make_partitioner(cfg: PartitionConfig, num_clients: int, num_examples: int, seed: int) -> Partitioner:
    if cfg.kind == "iid":
        return IidPartitioner(num_partitions=num_clients)
    if cfg.kind == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_clients, partition_by="label", alpha=cfg.alpha,
            min_partition_size=cfg.min_examples, self_balancing=cfg.self_balancing, shuffle=True, seed=seed,
        )
    if cfg.kind == "shards":
        # Shard size rounded up + keep_incomplete_shard: every example lands in some shard.
        shard_size = max(1, math.ceil(num_examples / (num_clients * cfg.shards_per_client)))
        return ShardPartitioner(
            num_partitions=num_clients, partition_by="label", shard_size=shard_size,
            keep_incomplete_shard=True, shuffle=True, seed=seed,
        )
    return SizePartitioner(partition_sizes=_size_partition_sizes(cfg.sizes, num_clients, num_examples))


# Seed of re-draw k (k >= 1) of a Dirichlet partition: far from small user seeds, still a function of the seed.
REDRAW_SEED_STRIDE = 1_000_003


def redraw_seed(seed: int, draw: int) -> int:
    return seed + draw * REDRAW_SEED_STRIDE


def _load_parts(train: Dataset, cfg: PartitionConfig, num_clients: int, seed: int) -> list[np.ndarray]:
    # Iid/size partitioners cut contiguous blocks, so shuffle first (seeded) to make blocks random.
    order = np.random.default_rng(seed).permutation(len(train))
    ds = train.add_column(_INDEX, list(range(len(train)))).select(order)
    partitioner = make_partitioner(cfg, num_clients, len(train), seed)
    partitioner.dataset = ds.select_columns([_INDEX, "label"])
    with warnings.catch_warnings():
        # flwr-datasets warns on every Dirichlet resample; our own error below says what to change.
        warnings.simplefilter("ignore", UserWarning)
        return [np.asarray(partitioner.load_partition(i)[_INDEX], dtype=np.int64) for i in range(num_clients)]


def partition_indices(train: Dataset, cfg: PartitionConfig, num_clients: int, seed: int) -> list[np.ndarray]:
    """Indices into ``train`` for each client; each example goes to exactly one client."""
    return partition_with_draw(train, cfg, num_clients, seed)[0]


def partition_with_draw(train: Dataset, cfg: PartitionConfig, num_clients: int,
                        seed: int) -> tuple[list[np.ndarray], int]:
    """(:func:`partition_indices`, which draw made it).

    A Dirichlet draw that flwr-datasets cannot make (after its own 10 re-samples) is drawn again
    with :func:`redraw_seed` up to ``partition.redraws`` times; draw 0 is the seed itself, so the
    default reproduces every earlier partition.
    """
    if num_clients > len(train):
        raise DataError(f"num_clients={num_clients} exceeds the {len(train)} training examples; lower num_clients")
    draws = cfg.redraws + 1 if cfg.kind == "dirichlet" else 1
    for draw in range(draws):
        try:
            parts = _load_parts(train, cfg, num_clients, redraw_seed(seed, draw))
            break
        except ValueError as err:
            if draw + 1 < draws:
                continue
            hint = (f"partition.alpha={cfg.alpha} with num_clients={num_clients} could not give every client "
                    f"{cfg.min_examples}+ examples (seed {seed}, {draws} draw(s)); raise partition.alpha, lower "
                    f"num_clients or partition.min_examples, set partition.self_balancing=true or "
                    f"partition.redraws=5, or try another seed"
                    if cfg.kind == "dirichlet" else f"{cfg.kind} partition failed: {str(err).splitlines()[0]}")
            raise DataError(hint) from None
    for cid, idx in enumerate(parts):
        if len(idx) < cfg.min_examples:
            cause = f"partition.alpha={cfg.alpha}, " if cfg.kind == "dirichlet" else ""
            raise DataError(
                f"client {cid} got {len(idx)} examples (kind={cfg.kind}, {cause}num_clients={num_clients}); "
                "lower num_clients or use a less skewed partition"
            )
    return [np.sort(p) for p in parts], draw


def shard_summary(stats: dict[str, Any]) -> dict[str, Any]:
    """Shard-size distribution beside the label skew: a FedAvg weighted by shard size is one client's
    model whenever a giant shard is sampled, which the skew alone does not show."""
    sizes = np.asarray([c["num_examples"] for c in stats["clients"]], dtype=float)
    return {"label_skew_tv": stats["label_skew_tv"], "min": int(sizes.min()), "median": float(np.median(sizes)),
            "max": int(sizes.max()), "largest_share": round(float(sizes.max() / sizes.sum()), 4),
            "cv": round(float(sizes.std() / sizes.mean()), 4)}


# partition.client_val_fraction when unset and a method of the run is personalised (FedSA-LoRA).
DEFAULT_CLIENT_VAL_FRACTION = 0.1


def client_val_fraction(cfg: Config) -> float:
    """``partition.client_val_fraction``, or when unset: 0.1 if a method of the run keeps parts of its
    model on the clients (only a client's own data can score its personalised model), else 0 (off)."""
    if cfg.partition.client_val_fraction is not None:
        return cfg.partition.client_val_fraction
    personalised = any((v := split_method(m)[1]) is not None and VARIANTS[v].private for m in cfg.methods)
    return DEFAULT_CLIENT_VAL_FRACTION if personalised else 0.0


def carve_client_val(parts: list[np.ndarray], fraction: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each client's shard split into (what it trains on, its held-out validation examples).

    A shard of n examples holds out round(fraction·n) of them, at least 1 and at most n − 1 (a
    client always keeps one to train on, so a 1-example shard holds out none and that client is
    not scored). Which ones is fixed by (seed, client id) alone, so a Flower node carves its own
    shard exactly as the server does. ``fraction`` 0: nothing is held out.
    """
    empty = np.empty(0, dtype=np.int64)
    if fraction <= 0:
        return list(parts), [empty] * len(parts)
    keep, val = [], []
    for cid, idx in enumerate(parts):
        n = len(idx)
        k = min(max(1, round(fraction * n)), n - 1) if n > 1 else 0
        held = np.random.default_rng([seed, cid, 0xC11E]).permutation(n)[:k]
        mask = np.zeros(n, dtype=bool)
        mask[held] = True
        keep.append(np.sort(idx[~mask]))
        val.append(np.sort(idx[mask]).astype(np.int64))
    return keep, val


def label_skew(label_counts: np.ndarray) -> float:
    """Mean total-variation distance between each client's label distribution and the global one.

    0 = every client sees the global mix; 1 = disjoint label sets. ``label_counts`` is
    (clients, classes).
    """
    counts = np.asarray(label_counts, dtype=float)
    global_p = counts.sum(0) / counts.sum()
    client_p = counts / counts.sum(1, keepdims=True)
    return float(0.5 * np.abs(client_p - global_p).sum(1).mean())


def partition_stats(labels: np.ndarray, parts: list[np.ndarray], label_names: list[str],
                    val_parts: list[np.ndarray] | None = None, val_fraction: float = 0.0) -> dict[str, Any]:
    """Per-client sizes and label histograms, plus the overall skew; JSON-ready.

    With held-out client splits (``val_parts``, see :func:`carve_client_val`), ``num_examples``,
    ``label_counts`` and ``indices`` describe what each client trains on, and ``num_val``,
    ``val_label_counts`` and ``val_indices`` what it is scored on.
    """
    k = len(label_names)
    counts = np.stack([np.bincount(labels[p], minlength=k) for p in parts])
    stats: dict[str, Any] = {
        "label_names": label_names,
        "label_skew_tv": round(label_skew(counts), 4),
        "clients": [
            {"id": i, "num_examples": int(len(p)), "label_counts": counts[i].tolist(), "indices": p.tolist()}
            for i, p in enumerate(parts)
        ],
    }
    if val_parts is not None and any(len(v) for v in val_parts):
        stats["client_val_fraction"] = val_fraction
        for c, v in zip(stats["clients"], val_parts):
            c.update(num_val=int(len(v)), val_label_counts=np.bincount(labels[v], minlength=k).tolist(),
                     val_indices=v.tolist())
    return stats


def format_stats(stats: dict[str, Any]) -> str:
    """A compact table of the split for the terminal."""
    names = stats["label_names"]
    width = max(6, *(len(n[:10]) for n in names))
    held = "client_val_fraction" in stats  # a held-out column: what each client is scored on
    head = f"{'client':>6} {'n':>6}  " + ("   val  " if held else "") + " ".join(f"{n[:10]:>{width}}" for n in names)
    rows = [
        f"{c['id']:>6} {c['num_examples']:>6}  " + (f"{c['num_val']:>6}  " if held else "")
        + " ".join(f"{v:>{width}}" for v in c["label_counts"])
        for c in stats["clients"]
    ]
    sh = shard_summary(stats)
    return "\n".join([head, *rows, f"label skew (mean TV distance to the global mix): {stats['label_skew_tv']}",
                      f"shard sizes: min {sh['min']}, median {sh['median']:g}, max {sh['max']} "
                      f"(largest client holds {sh['largest_share']:.1%}; coefficient of variation {sh['cv']:.2f})"])
