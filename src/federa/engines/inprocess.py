"""The default engine: every client trains in this process, one after another.

Clients share the server's model object: only trainable tensors differ between parties,
and ``local_update`` loads the broadcast state before training, so this is exactly what
separate clients holding the same frozen weights would compute, without N model copies.
"""

from __future__ import annotations

import time
from typing import Any

from tqdm.auto import tqdm

from federa.client import local_update
from federa.engines.server import ServerRun, check_replies, min_replies
from federa.errors import NonFiniteLossError
from federa.job import Job
from federa.runlog import RunDir


def run_method(job: Job, method_name: str, run_dir: RunDir, progress: bool = True, log=print) -> dict[str, Any]:
    """Run (or resume) one method to its last round; returns its result record."""
    server = ServerRun(job, method_name, run_dir, log=log)
    bar = tqdm(total=job.cfg.rounds, initial=server.round, desc=method_name, unit="round",
               disable=not progress, dynamic_ncols=True)
    bar.set_postfix(server.progress_postfix())
    try:
        for rnd in server.remaining_rounds():
            started = time.perf_counter()
            updates, failed = {}, {}
            plan = server.configure(rnd)
            for cid, settings in plan.items():
                # A simulated client's memory (SCAFFOLD's cᵢ) is kept for it by the strategy,
                # which checkpoints it; on Flower each node keeps its own.
                rule = server.local_rule(rnd, cid, settings, server.strategy.client_memory(cid))
                try:
                    updates[cid] = local_update(server.model, server.client_state(rnd, cid), job.shard(cid), job.collate, settings,
                                                job.device, client_id=cid, rule=rule)
                except NonFiniteLossError as err:  # dropped from this round, like a missing reply
                    failed[cid] = str(err)
                    continue
                server.strategy.keep_client_memory(cid, updates[cid].memory)
            check_replies(rnd, len(plan), updates, failed, min_replies(job.cfg), log=log, method=method_name)
            server.complete_round(rnd, updates, started)
            bar.update(1)
            bar.set_postfix(server.progress_postfix())
    except NonFiniteLossError as err:
        bar.close()
        log(f"[{method_name}] stopped: {err}")
        return server.fail(str(err))
    bar.close()
    return server.finish()
