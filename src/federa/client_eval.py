"""Per-client evaluation: every evaluated model is also scored on each client's own held-out examples.

Federated papers judge a model by how it serves each client, not only by the pooled test set:
the mean over clients, the worst client, the 10th percentile and the spread (the fairness view).
Each client's examples are held out of its shard at partition time
(:func:`federa.partition.carve_client_val`, ``partition.client_val_fraction``). A personalised
method (FedSA-LoRA) is scored with each client's own model: the global state plus that client's
private tensors, which the strategy provides.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from federa.errors import FederaError
from federa.methods.base import load_tensors
from federa.types import State

if TYPE_CHECKING:
    from federa.job import Job

# The metrics-line keys, in the order a report shows them.
SPREAD_KEYS = ("client_score_mean", "client_score_worst", "client_score_p10", "client_score_std")


def spread(scores: Sequence[float | None]) -> dict[str, float]:
    """Mean (unweighted: every client counts once), worst, 10th percentile (linear interpolation
    between clients) and standard deviation (population) of the scores that exist; {} if none."""
    kept = np.asarray([s for s in scores if s is not None], dtype=np.float64)
    if kept.size == 0:
        return {}
    return {"client_score_mean": float(kept.mean()), "client_score_worst": float(kept.min()),
            "client_score_p10": float(np.percentile(kept, 10)), "client_score_std": float(kept.std())}


def evaluate_clients(job: Job, model: nn.Module, private_of: Callable[[int | None], State]) -> dict[str, Any]:
    """``client_score`` (the task's main metric per client id; None for a client with no held-out
    example) and its :func:`spread`, or {} when the run holds out nothing.

    ``private_of(cid)``: what client ``cid``'s model adds to the global one (empty for every method
    but personalised ones); ``private_of(None)`` is loaded back afterwards, so ``model`` ends as the
    global model.
    """
    if not any(len(v) for v in job.val_parts):
        return {}
    cfg = job.cfg
    scores: list[float | None] = []
    for cid in range(len(job.val_parts)):
        val = job.client_val(cid)
        if val is None:
            scores.append(None)
            continue
        load_tensors(model, private_of(cid))
        metrics = job.task.evaluate(model, val, job.collate, job.label_names, cfg.eval_batch_size, job.device,
                                    cfg.model.precision)
        score = float(metrics[job.main_metric])
        scores.append(score if math.isfinite(score) else None)
    load_tensors(model, private_of(None))
    return {"client_score": scores, **spread(scores)}


def node_metrics(replies: Mapping[int, Mapping[str, float]], trained: Sequence[int], num_clients: int,
                 main_metric: str, held_out: bool) -> dict[str, Any]:
    """The evaluation record when only the nodes hold the clients' private tensors (FedSA-LoRA on Flower).

    ``replies``: client id → the node's scores of that client's personalised model (global state +
    its own private tensors): ``val.<metric>`` on its held-out split, ``test.<metric>`` on the run's
    test set. The test-set metrics are the unweighted mean, in client-id order, over the clients of
    ``trained`` (those that have trained so far, the clients whose B the in-process engine averages)
    that replied with them: the mean *score* of the personalised models, since no party may build the
    mean-B model the in-process simulation scores. ``client_score`` is exactly the in-process value.
    """
    scored = [c for c in trained if any(k.startswith("test.") for k in replies.get(c, {}))]
    tests = [{k[len("test."):]: v for k, v in replies[c].items() if k.startswith("test.")} for c in scored]
    if not tests:
        raise FederaError(f"no node scored the test set with its personalised model (clients {list(trained)} "
                          "trained; a node with its own data-path holds no copy of the server's test set)")
    metrics: dict[str, Any] = {k: sum(t[k] for t in tests) / len(tests) for k in tests[0]}
    out: dict[str, Any] = {"score": metrics[main_metric], **metrics, "personal_test_clients": scored}
    if held_out:
        scores: list[float | None] = []
        for cid in range(num_clients):
            score = replies.get(cid, {}).get(f"val.{main_metric}")
            scores.append(float(score) if score is not None and math.isfinite(score) else None)
        out.update({"client_score": scores, **spread(scores)})
    return out
