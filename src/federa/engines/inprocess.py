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
from tqdm.auto import tqdm

from federa.client import local_update
from federa.engines.server import ServerRun
from federa.engines.workers import ClientPool, worker_threads
from federa.errors import NonFiniteLossError
from federa.job import Job
from federa.runlog import RunDir


def run_method(job: Job, method_name: str, run_dir: RunDir, progress: bool = True, log=print) -> dict[str, Any]:
    """Run (or resume) one method to its last round; returns its result record."""
    server = ServerRun(job, method_name, run_dir, log=log)
    bar = tqdm(total=job.cfg.rounds, initial=server.round, desc=method_name, unit="round",
               disable=not progress, dynamic_ncols=True)
    bar.set_postfix(server.progress_postfix())
    workers = job.cfg.inprocess.workers
    pool = ClientPool(job, method_name, server.setup, workers,
                      worker_threads(job.cfg.model.num_threads or torch.get_num_threads(), workers)
                      ) if workers > 1 and server.round < job.cfg.rounds else None
    try:
        for rnd in server.remaining_rounds():
            started = time.perf_counter()
            updates = {}
            # A simulated client's memory (SCAFFOLD's cᵢ) is kept for it by the strategy, which
            # checkpoints it; on Flower each node keeps its own.
            clients = {cid: (settings, server.local_rule(rnd, cid, settings, server.strategy.client_memory(cid)))
                       for cid, settings in server.configure(rnd).items()}
            if pool is not None:
                updates = pool.train(server.state, clients, server.strategy.base_fold())
            for cid, (settings, rule) in clients.items():
                if pool is None:
                    updates[cid] = local_update(server.model, server.state, job.shard(cid), job.collate, settings,
                                                job.device, client_id=cid, rule=rule)
                server.strategy.keep_client_memory(cid, updates[cid].memory)
            server.complete_round(rnd, updates, started)
            bar.update(1)
            bar.set_postfix(server.progress_postfix())
    except NonFiniteLossError as err:
        bar.close()
        log(f"[{method_name}] stopped: {err}")
        return server.fail(str(err))
    finally:
        if pool is not None:
            pool.close()
    bar.close()
    return server.finish()
