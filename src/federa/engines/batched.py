"""The in-process engine's batched clients (``inprocess.batch_clients``): a round's sampled clients
trained K at a time by :func:`federa.client_batch.batched_local_update`, or one at a time (said once
per method, with the reason) where that cannot apply."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

from federa.client_batch import ClientTask, batch_reason, batched_local_update
from federa.engines.transport import ClientTask as Sent
from federa.events import Events
from federa.types import Update


class BatchedClients:
    """Trains a round's clients K at a time on the server's model; built once per method."""

    def __init__(self, job, method_name: str, clients_per_round: int, log: Callable[[str], None]) -> None:
        self.job, self.name, self.log = job, method_name, log
        self.k = job.cfg.inprocess.clients_at_once(method_name, clients_per_round, str(job.device))
        self._said = False

    def train(self, model: nn.Module, sent: Mapping[int, Sent],
              events: Events) -> tuple[dict[int, Update], dict[int, str]] | None:
        """(client → reply, client → why it failed) for the round's tasks ``sent``, or None when they must
        train one at a time (K = 1, or :func:`batch_reason` says why, logged once)."""
        if self.k <= 1:
            return None
        job = self.job
        tasks = [ClientTask(cid, t.state, job.shard(cid), t.settings, t.rule) for cid, t in sent.items()]
        why = batch_reason(model, tasks, job.cfg.model.gradient_checkpointing)
        if why is not None:
            if not self._said:
                self.log(f"[{self.name}] inprocess.batch_clients={job.cfg.inprocess.batch_clients}: clients train "
                         f"one at a time, because {why}")
                self._said = True
            return None
        updates, failed = {}, {}
        for first in range(0, len(tasks), self.k):
            group = tasks[first:first + self.k]
            events.client_start(first + 1, len(tasks), group[0].client_id)
            done, bad = batched_local_update(model, group, job.collate, job.device, on_step=events.step)
            updates.update(done)
            failed.update(bad)
        return updates, failed
