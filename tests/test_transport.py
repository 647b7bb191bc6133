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
from federa.engines.transport import ClientTask, Replies, ScoreTask, Transport
from federa.job import prepare_job
from federa.methods.base import private_tensors
from federa.results_dir import RunDir
from federa.strategies.per_method import method_stack

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


class NodeLikeClients(OwnModelClients):
    """Clients that keep their own memory (FedSA-LoRA's B and head), as Flower's nodes do: the server
    sends each a :class:`ScoreTask` to score its personalised model, and reads nothing else of it."""

    keeps_client_memory = True

    def __init__(self, job, method: str) -> None:
        super().__init__(job, method)
        self.memory: dict[int, dict] = {}
        self.scored: list[tuple[int, dict[int, ScoreTask]]] = []

    def train(self, rnd: int, tasks: dict[int, ClientTask]) -> Replies:
        job, rule_class = self.job, method_stack(self.job.cfg, self.method).client_hook.client_rule
        if self.model is None:
            self.model = job.client_model(self.method, next(iter(tasks.values())).setup)
            self.initial = private_tensors(self.model, job.private_names[self.method])  # B and head as built
        out = {}
        for cid, t in tasks.items():
            rule = rule_class(t.state, t.payload, self.memory.get(cid, self.initial), t.settings)
            out[cid] = local_update(self.model, t.state, job.shard(cid), job.collate, t.settings, job.device,
                                    client_id=cid, rule=rule)
            self.memory[cid] = out[cid].memory
        return Replies(out)

    def personal_scores(self, rnd: int, tasks):
        self.scored.append((rnd, dict(tasks)))
        return {c: {"val.accuracy": c / 10, **({"test.accuracy": 0.5 + c / 100} if t.test else {})}
                for c, t in tasks.items()}


def test_clients_that_keep_their_private_tensors_score_what_the_server_sends(tiny_cfg, tmp_path):
    """The server builds each score task (ServerRun.score_tasks); the transport only carries it."""
    method = "lora+fedsa"
    job = prepare_job(tiny_cfg(f"methods={method}", "rounds=2", "partition.client_val_fraction=0.2"))
    server = ServerRun(job, method, RunDir(tmp_path), log=lambda *_: None)
    transport = NodeLikeClients(job, method)
    assert server.run(transport)["status"] == "done"
    # After each round, every client (all have a held-out split) is sent the global A the round ended
    # with, no fold, the setup; those that have trained also score the test set.
    assert [rnd for rnd, _ in transport.scored] == [1, 2]
    trained: set[int] = set()
    for (rnd, tasks), clients in zip(transport.scored, [r["clients"] for r in RunDir(tmp_path).read_metrics()[1:]]):
        trained |= set(clients)
        assert sorted(tasks) == [0, 1, 2, 3]
        assert {c for c, t in tasks.items() if t.test} == trained
        assert all(t.fold == {} and t.setup is server.setup for t in tasks.values())
    final = load_checkpoint(RunDir(tmp_path).checkpoint(method))[0]["state"]
    assert all(torch.equal(t.state[k], final[k]) for t in transport.scored[-1][1].values() for k in final)
    last = RunDir(tmp_path).read_metrics()[-1]
    assert last["client_score"] == [0.0, 0.1, 0.2, 0.3]
    assert last["score"] == sum(0.5 + c / 100 for c in trained) / len(trained)
    # The clients' B never reached the server: it saves no personal copies.
    assert not (RunDir(tmp_path).final_model(method) / "client_private.safetensors").exists()
