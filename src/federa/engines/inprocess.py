"""The default engine: every client trains in this process, one after another.

Clients share the server's model object: only trainable tensors differ between parties,
and ``local_update`` loads the broadcast state before training, so this is exactly what
separate clients holding the same frozen weights would compute, without N model copies.
"""

from __future__ import annotations

import time
from typing import Any

from federa.client import local_update
from federa.engines.server import ServerRun, check_replies, min_replies
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
    try:
        for rnd in server.remaining_rounds():
            events.round_start(rnd)
            started = time.perf_counter()
            updates, failed = {}, {}
            planned = server.configure(rnd)
            for k, (cid, settings) in enumerate(planned.items(), 1):
                events.client_start(k, len(planned), cid)
                # A simulated client's memory (SCAFFOLD's cᵢ) is kept for it by the strategy,
                # which checkpoints it; on Flower each node keeps its own.
                rule = server.local_rule(rnd, cid, settings, server.strategy.client_memory(cid))
                try:
                    updates[cid] = local_update(server.model, server.client_state(rnd, cid), job.shard(cid),
                                                job.collate, settings, job.device, client_id=cid, rule=rule,
                                                on_step=events.step)
                except NonFiniteLossError as err:  # dropped from this round, like a missing reply
                    failed[cid] = str(err)
                    continue
                server.strategy.keep_client_memory(cid, updates[cid].memory)
            check_replies(rnd, len(planned), updates, failed, min_replies(job.cfg), log=log, method=method_name)
            record = server.complete_round(rnd, updates, started)
            events.round_end(rnd, record, server.progress_postfix())
        result = server.finish()
    except NonFiniteLossError as err:
        log(f"[{method_name}] stopped: {err}")
        result = server.fail(str(err))
    finally:
        events.method_end(method_name, result)
    return result
