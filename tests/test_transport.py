"""An engine is a transport: ``ServerRun.run(transport)`` is the one round loop.

A transport written against :class:`federa.engines.transport.Transport` alone (its own client model,
no access to the strategy) gives the in-process engine's run exactly, so a batched-clients
transport plugs in the same way.
"""

from __future__ import annotations

import torch

from federa.checkpoint import load_checkpoint
from federa.client import local_update
from federa.engines.inprocess import run_method
from federa.engines.server import ServerRun
from federa.engines.transport import ClientTask, Replies, Transport
from federa.job import prepare_job
from federa.results_dir import RunDir

_TIMING = {"round_s", "aggregate_s", "eval_s", "client_compute_s", "client_train_s", "cum_train_wall_s",
           "cum_client_compute_s", "cum_wall_s", "modelled_round_s", "cum_modelled_s"}


class OwnModelClients(Transport):
    """Trains each task on a client model of its own, built from the broadcast setup like a remote node."""

    def __init__(self, job, method: str) -> None:
        self.job, self.method, self.model = job, method, None
        self.rounds: list[tuple[int, list[int]]] = []

    def train(self, rnd: int, tasks: dict[int, ClientTask]) -> Replies:
        job = self.job
        if self.model is None:
            self.model = job.client_model(self.method, next(iter(tasks.values())).setup)
        self.rounds.append((rnd, list(tasks)))
        return Replies({cid: local_update(self.model, t.state, job.shard(cid), job.collate, t.settings, job.device,
                                          client_id=cid, rule=t.rule) for cid, t in tasks.items()})


def _rows(out, method):
    return [{k: v for k, v in r.items() if k not in _TIMING} for r in RunDir(out).read_metrics() if r["method"] == method]


def test_a_transport_of_its_own_gives_the_inprocess_run(tiny_cfg, tmp_path):
    cfg = tiny_cfg("methods=lora", "strategy=scaffold", "rounds=2")  # a client rule with memory the server keeps
    job = prepare_job(cfg)
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_method(job, "lora", RunDir(a), progress=False, log=lambda *_: None)["status"] == "done"
    transport = OwnModelClients(job, "lora")
    server = ServerRun(job, "lora", RunDir(b), log=lambda *_: None)
    assert server.run(transport)["status"] == "done"
    assert transport.rounds == [(1, sorted(transport.rounds[0][1])), (2, sorted(transport.rounds[1][1]))]
    assert all(len(clients) == cfg.clients_per_round for _, clients in transport.rounds)
    pa, pb = load_checkpoint(RunDir(a).checkpoint("lora"))[0], load_checkpoint(RunDir(b).checkpoint("lora"))[0]
    assert pa["round"] == pb["round"] == 2
    for k in pa["state"]:
        assert torch.equal(pa["state"][k], pb["state"][k]), k
    assert _rows(a, "lora") == _rows(b, "lora") and len(_rows(a, "lora")) == 3
