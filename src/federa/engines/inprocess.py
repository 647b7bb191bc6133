"""The default engine: every client trains in this process, one after another.

Clients share the server's model object: only trainable tensors differ between parties,
and ``local_update`` loads the broadcast state before training, so this is exactly what
separate clients holding the same frozen weights would compute, without N model copies.
With ``inprocess.workers: N`` > 1, N worker processes train the round's clients side by side
(:mod:`federa.engines.workers`), with the same replies.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from federa.client import local_update
from federa.engines.batched import BatchedClients
from federa.engines.server import ServerRun, check_replies, min_replies
from federa.engines.workers import ClientPool, worker_threads
from federa.errors import NonFiniteLossError
from federa.events import Events
from federa.job import Job
from federa.progress import Progress
from federa.runlog import RunDir


def run_method(job: Job, method_name: str, run_dir: RunDir, progress: bool = True, log=print,
               events: Events | None = None) -> dict[str, Any]:
    """Run (or resume) one method to its last round; returns its result record.

    ``events``: the listeners of the run (progress display, trackers, a stop request); default: the
    progress display alone."""
    events = events if events is not None else Progress.for_output(progress, log)
    log = events.wrap_log(log)
    server = ServerRun(job, method_name, run_dir, log=log)
    events.method_start(method_name, job.cfg.rounds, server.round, server.progress_postfix())
    result = None
    workers = job.cfg.inprocess.workers
    pool = ClientPool(job, method_name, server.setup, workers,
                      worker_threads(job.cfg.model.num_threads or torch.get_num_threads(), workers)
                      ) if workers > 1 and server.round < job.cfg.rounds else None
    batched = BatchedClients(job, method_name, job.cfg.clients_per_round, log) if pool is None else None
    try:
        for rnd in server.remaining_rounds():
            events.round_start(rnd)
            started = time.perf_counter()
            updates, failed = {}, {}
            # A simulated client's memory (SCAFFOLD's cᵢ) is kept for it by the strategy, which
            # checkpoints it; on Flower each node keeps its own.
            clients = {cid: (settings, server.local_rule(rnd, cid, settings, server.strategy.client_memory(cid)))
                       for cid, settings in server.configure(rnd).items()}
            if pool is not None:
                updates, failed = pool.train({cid: server.client_state(rnd, cid) for cid in clients}, clients,
                                             server.strategy.base_fold())
            elif batched is not None and (replies := batched.train(server, rnd, clients, events)) is not None:
                updates, failed = replies
            for k, (cid, (settings, rule)) in enumerate(clients.items(), 1):
                if pool is None and cid not in updates and cid not in failed:
                    events.client_start(k, len(clients), cid)
                    try:
                        updates[cid] = local_update(server.model, server.client_state(rnd, cid), job.shard(cid),
                                                    job.collate, settings, job.device, client_id=cid, rule=rule,
                                                    on_step=events.step)
                    except NonFiniteLossError as err:  # dropped from this round, like a missing reply
                        failed[cid] = str(err)
                if cid not in updates:
                    continue
                server.strategy.keep_client_memory(cid, updates[cid].memory)
            check_replies(rnd, len(clients), updates, failed, min_replies(job.cfg), log=log, method=method_name)
            record = server.complete_round(rnd, updates, started)
            events.round_end(rnd, record, server.progress_postfix())
        result = server.finish()
    except NonFiniteLossError as err:
        log(f"[{method_name}] stopped: {err}")
        result = server.fail(str(err))
    finally:
        if pool is not None:
            pool.close()
        events.method_end(method_name, result)
    return result
