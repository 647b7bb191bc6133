"""A round's clients trained by N worker processes (``inprocess.workers: N``), with the numbers of
the sequential engine.

Each worker is a *spawned* process (never forked: a fork copies torch's thread pools and locks
in whatever state the parent's threads left them, which can hang the child). It receives the
prepared :class:`~federa.job.Job` and the method's broadcast setup once, builds the client model
once (as a Flower node does) and keeps it for the whole run; each task then carries only what a
client receives in a round: the global trainable state, its settings, its strategy rule (with
the memory SCAFFOLD keeps for it) and any frozen-weight fold (FedEx-LoRA). A reply depends
only on those and the client's seed, never on which worker trained it or when, so replies are
bit-identical to the sequential engine's at the same thread count per process, and the engine
aggregates them in the order the strategy sampled the clients (client id order).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from federa.job import Job
    from federa.types import LocalRule, State, TrainSettings, Update


def worker_threads(total: int, workers: int) -> int:
    """Each worker's share of the thread budget (at least one)."""
    return max(1, total // workers)


class ClientPool:
    """``workers`` spawned processes, each holding its own built client model."""

    def __init__(self, job: Job, method_name: str, setup: State, workers: int, threads: int) -> None:
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start, initargs=(job, method_name, setup, threads))

    def train(self, states: dict[int, State], clients: dict[int, tuple[TrainSettings, LocalRule | None]],
              fold: State) -> tuple[dict[int, Update], dict[int, str]]:
        """(every client's reply, keyed in the order of ``clients``; client id → why it failed, for
        a client whose loss turned NaN/inf: dropped from the round like a missing reply).
        ``states``: the trainable state each client starts from."""
        futures = {cid: self._pool.submit(_train, cid, states[cid], settings, rule, fold)
                   for cid, (settings, rule) in clients.items()}
        replies = {cid: f.result() for cid, f in futures.items()}
        return ({c: r for c, r in replies.items() if not isinstance(r, str)},
                {c: r for c, r in replies.items() if isinstance(r, str)})

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- inside a worker process: one client model, built once, reused for every task ----------

_worker: dict = {}


def _start(job: Job, method_name: str, setup: State, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _worker.update(job=job, model=job.client_model(method_name, setup), folded={})


def _train(cid: int, state: State, settings: TrainSettings, rule: LocalRule | None, fold: State) -> Update | str:
    from federa.client import local_update
    from federa.errors import NonFiniteLossError
    from federa.strategies.fedex import apply_base_fold

    job, model = _worker["job"], _worker["model"]
    if fold or _worker["folded"]:  # the server moved frozen weights (FedEx-LoRA): follow it
        _worker["folded"] = apply_base_fold(model, fold, _worker["folded"])
    try:
        return local_update(model, state, job.shard(cid), job.collate, settings, job.device, client_id=cid, rule=rule)
    except NonFiniteLossError as err:
        return str(err)
