"""The default engine: every client trains in this process, one after another.

Clients share the server's model object: only trainable tensors differ between parties,
and ``local_update`` loads the broadcast state before training, so this is exactly what
separate clients holding the same frozen weights would compute, without N model copies.
With ``inprocess.workers: N`` > 1, N worker processes train the round's clients side by side
(:mod:`federa.engines.workers`), with the same replies. The round loop is
:meth:`federa.engines.server.ServerRun.run`; this module is only the transport.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from federa.client import local_update
from federa.engines.batched import BatchedClients
from federa.engines.server import ServerRun
from federa.engines.transport import ClientTask, Replies, Transport
from federa.engines.workers import ClientPool, worker_threads
from federa.errors import NonFiniteLossError
from federa.events import Events
from federa.job import Job
from federa.progress import Progress
from federa.results_dir import RunDir


class InProcessClients(Transport):
    """Trains each task on the server's own model object (``model``: it changes at a stage switch),
    or in ``workers`` spawned processes when more than one."""

    def __init__(self, job: Job, method_name: str, model: Callable[[], nn.Module], events: Events,
                 log: Callable[[str], None] = print) -> None:
        self.job, self.method_name, self.model, self.events = job, method_name, model, events
        self.workers = job.cfg.inprocess.workers
        self.pool: ClientPool | None = None
        # inprocess.batch_clients: K clients in one forward/backward (federa.client_batch), where it applies.
        self.batched = BatchedClients(job, method_name, job.cfg.clients_per_round, log) if self.workers == 1 else None

    def train(self, rnd: int, tasks: Mapping[int, ClientTask]) -> Replies:
        if self.workers > 1:
            return self._train_in_pool(tasks)
        if self.batched is not None and (done := self.batched.train(self.model(), tasks, self.events)) is not None:
            return Replies(*done)
        job, updates, failed = self.job, {}, {}
        for k, (cid, task) in enumerate(tasks.items(), 1):
            self.events.client_start(k, len(tasks), cid)
            try:
                updates[cid] = local_update(self.model(), task.state, job.shard(cid), job.collate, task.settings,
                                            job.device, client_id=cid, rule=task.rule, on_step=self.events.step)
            except NonFiniteLossError as err:  # dropped from this round, like a missing reply
                failed[cid] = str(err)
        return Replies(updates, failed)

    def _train_in_pool(self, tasks: Mapping[int, ClientTask]) -> Replies:
        if self.pool is None:  # started at the first round to train, with the setup every worker builds from
            first = next(iter(tasks.values()))
            threads = worker_threads(self.job.cfg.model.num_threads or torch.get_num_threads(), self.workers)
            self.pool = ClientPool(self.job, self.method_name, first.setup, self.workers, threads)
        fold = next(iter(tasks.values())).fold if tasks else {}
        updates, failed = self.pool.train({cid: t.state for cid, t in tasks.items()},
                                          {cid: (t.settings, t.rule) for cid, t in tasks.items()}, fold)
        return Replies(updates, failed)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def run_method(job: Job, method_name: str, run_dir: RunDir, progress: bool = True, log=print,
               events: Events | None = None) -> dict[str, Any]:
    """Run (or resume) one method to its last round; returns its result record.

    ``events``: the listeners of the run (progress display, trackers, a stop request); default: the
    progress display alone."""
    events = events if events is not None else Progress.for_output(progress, log)
    log = events.wrap_log(log)
    server = ServerRun(job, method_name, run_dir, log=log)
    return server.run(InProcessClients(job, method_name, lambda: server.model, events, log), events)
