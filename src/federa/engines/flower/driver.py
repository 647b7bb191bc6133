"""The server half of the Flower engine: one method's rounds driven over Flower's Grid.

- :func:`drive_method` runs inside federa's ServerApp (a process the SuperLink starts). It runs
  :meth:`ServerRun.run`, the round loop of every engine, over :class:`GridTransport`: the server
  plans each round (strategy sampling → client tasks), the Grid carries each task to the node
  that holds its client, and the replies go back into ``ServerRun.complete_round``, which
  aggregates, evaluates, logs and checkpoints into the results folder exactly as in-process.
- :func:`federa.engines.flower.engine.run_method`, in the ``federa run`` process, submits it.

Failures: a round aggregates the replies that arrived within ``flower.round_timeout_s`` if
there are at least ``flower.min_replies`` of them (default: half the sampled clients, rounded
up); otherwise the method stops with one line saying so (``<method>/flower_stopped.json``, no
``result.json``), and everything already written (metrics, checkpoints) stays, so
``federa run --resume`` continues it from the last finished round. A client that fails (a
NaN/inf loss, an exception in its ClientApp, a malformed reply) counts as no reply; when the
round is short only because losses diverged, the method fails instead (resuming cannot help).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from federa.types import Update
from federa.engines.server import ServerRun
from federa.engines.transport import ClientTask, Replies, ScoreTask, Transport, min_replies
from federa.errors import FederaError, NonFiniteLossError
from federa.engines.flower import FlowerError, wire
from federa.engines.flower.nodes import NodeMap
from federa.job import Job
from federa.results_dir import RunDir


class GridTransport(Transport):
    """Sends one round's tasks to the nodes over Flower's Grid and turns the replies into federa Updates."""

    keeps_client_memory = True  # each node keeps its client's memory (federa.engines.flower.node_memory)

    def __init__(self, grid: Grid, server: ServerRun, nodes: NodeMap, context: Context | None, log=print) -> None:
        self.grid, self.server, self.nodes, self.context, self.log = grid, server, nodes, context, log
        job = server.job
        self.cfg_yaml, self.labels = job.cfg.to_yaml(), list(job.label_names)
        self.timeout = job.cfg.flower.round_timeout_s
        self.secure_aggregation = job.cfg.secure_aggregation
        self.has_setup: set[int] = set()  # nodes that already hold this method's setup
        self.problems: list[str] = []
        self.nonfinite: list[int] = []  # clients whose loss became NaN/inf this round

    def _targets(self, plan: Mapping[int, Any]) -> dict[int, int]:
        return {cid: self.nodes.node_of[cid] for cid in plan if cid in self.nodes.node_of}

    def start_round(self, rnd: int) -> set[int]:
        self.nodes.refresh()
        self.problems, self.nonfinite = [], []
        return set(self.nodes.own_data)

    def train(self, rnd: int, tasks: Mapping[int, ClientTask]) -> Replies:
        if self.secure_aggregation:
            updates, aggregate = self.secure(rnd, tasks, min_replies(self.server.job.cfg))
            return Replies(updates, aggregate=aggregate)
        return Replies(self.plain(rnd, tasks))

    def check(self, rnd: int, tasks: Mapping[int, ClientTask], replies: Replies, need: int, log,
              method: str) -> None:
        updates, cfg = replies.updates, self.server.job.cfg
        silent = [c for c in tasks if c not in updates]
        if len(updates) < need and self.nonfinite and len(updates) + len(self.nonfinite) >= need:
            # Short because losses diverged, not because nodes are away: resuming cannot help.
            raise NonFiniteLossError(
                f"round {rnd}: only {len(updates)} of {len(tasks)} sampled clients trained, fewer than "
                f"flower.min_replies={need} (clients {sorted(self.nonfinite)} failed; first: {self.problems[0]})")
        if len(updates) < need or (self.secure_aggregation and replies.aggregate is None):
            raise FlowerError(
                f"round {rnd}: {len(updates)} of {len(tasks)} sampled clients replied within "
                f"{cfg.flower.round_timeout_s:.0f}s, flower.min_replies={need} (no reply: clients {silent}"
                + (f"; {self.problems[0]}" if self.problems else "")
                + ")"
            )
        for p in self.problems:
            log(f"[{method}] round {rnd}: {p}")
        if silent:
            log(f"[{method}] round {rnd}: no reply from client(s) {silent}; aggregating the other {len(updates)}")

    def round_done(self, rnd: int, tasks: Mapping[int, ClientTask], replies: Replies,
                   record: Mapping[str, Any]) -> None:
        server = self.server
        self.log(f"[{server.name}] round {rnd}/{server.job.cfg.rounds}: {len(replies.updates)}/{len(tasks)} replies"
                 + (f", {server.job.main_metric} {record['score']:.4f}" if record else ""))  # the task's main metric

    def plain(self, rnd: int, tasks: Mapping[int, ClientTask]) -> dict[int, Update]:
        server, targets = self.server, self._targets(tasks)
        msgs = []
        for cid, nid in targets.items():
            task = tasks[cid]
            content = RecordDict({
                wire.SETTINGS: wire.settings_record(server.name, cid, self.cfg_yaml, task.settings, self.labels,
                                                    rnd=rnd, run_token=server.run_token),
                wire.STATE: wire.state_record(task.state),  # its rank's factors, if its own
            })
            if nid not in self.has_setup:
                content.array_records[wire.SETUP] = wire.state_record(task.setup)
            # The strategy's client hook: what its rule needs (SCAFFOLD's c), and its base fold
            # (FedEx-LoRA), which the node must hold on its frozen weights. Both are in bytes_down.
            if task.payload:
                content.array_records[wire.PAYLOAD] = wire.state_record(task.payload)
            if task.fold:
                content.array_records[wire.FOLD] = wire.state_record(task.fold)
            msgs.append(Message(content, nid, MessageType.TRAIN, group_id=f"{server.name}:{rnd}", ttl=self.timeout))
        client_of = {nid: cid for cid, nid in targets.items()}
        updates: dict[int, Update] = {}
        for reply in self.grid.send_and_receive(msgs, timeout=self.timeout):
            nid = reply.metadata.src_node_id
            cid = client_of.get(nid)
            if cid is None:
                continue
            if reply.has_error():
                self.problems.append(f"client {cid}: {reply.error.reason}")
                continue
            if (err := wire.content_error(reply.content)) is not None:
                # A client that failed is dropped from this round like a missing reply.
                if err[0] == NonFiniteLossError.__name__:
                    self.nonfinite.append(cid)
                self.problems.append(f"client {cid}: {err[1]}")
                continue
            self.has_setup.add(nid)
            try:
                updates[cid] = wire.content_update(reply.content)
            except (KeyError, TypeError, ValueError) as err:  # a reply missing its records
                self.problems.append(f"client {cid}: malformed reply ({type(err).__name__}: {err})")
        # Replies arrive in any order; FedAvg sums in client order, like the in-process engine.
        return {c: updates[c] for c in sorted(updates)}

    def personal_scores(self, rnd: int, tasks: Mapping[int, ScoreTask]) -> dict[int, dict[str, float]]:
        """Each node's scores of its client's personalised model (FedSA-LoRA), for the tasks the server
        built (:meth:`ServerRun.score_tasks`). Not counted in the bytes: evaluation traffic is not part
        of the protocol (the in-process engine counts none either). A node that does not answer leaves
        its client unscored."""
        server, targets = self.server, self._targets(tasks)
        msgs = []
        for cid, nid in targets.items():
            task = tasks[cid]
            content = RecordDict({
                wire.SETTINGS: wire.evaluate_record(server.name, cid, self.cfg_yaml, self.labels, rnd,
                                                    server.run_token, task.test),
                wire.STATE: wire.state_record(task.state),
            })
            if nid not in self.has_setup:  # a client never sampled yet still needs the model's setup
                content.array_records[wire.SETUP] = wire.state_record(task.setup)
            if task.fold:
                content.array_records[wire.FOLD] = wire.state_record(task.fold)
            msgs.append(Message(content, nid, MessageType.EVALUATE, group_id=f"{server.name}:{rnd}:evaluate",
                                ttl=self.timeout))
        client_of = {nid: cid for cid, nid in targets.items()}
        scores: dict[int, dict[str, float]] = {}
        for reply in self.grid.send_and_receive(msgs, timeout=self.timeout):
            cid = client_of.get(reply.metadata.src_node_id)
            if cid is None:
                continue
            if reply.has_error():
                self.log(f"[{server.name}] round {rnd}: client {cid} did not evaluate: {reply.error.reason}")
            elif (err := wire.content_error(reply.content)) is not None:
                self.log(f"[{server.name}] round {rnd}: client {cid} did not evaluate: {err[1]}")
            elif wire.METRICS in reply.content.metric_records:
                got = dict(reply.content.metric_records[wire.METRICS])
                # A score that is not one number (a list) would stop the mean of the clients' scores.
                bad = [k for k, v in got.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
                if bad:
                    self.log(f"[{server.name}] round {rnd}: client {cid} did not evaluate: its score "
                             f"{bad[0]} is {str(got[bad[0]])[:40]}, not a number")
                else:
                    scores[cid] = {k: float(v) for k, v in got.items()}
        return scores

    def secure(self, rnd: int, tasks: Mapping[int, ClientTask], need: int) -> tuple[dict[int, Update], dict | None]:
        from federa.engines.flower.secagg import apply_average, fit_ins, secagg_round

        server, targets = self.server, self._targets(tasks)
        if any(tasks[c].fold or tasks[c].payload for c in targets):
            # The config check refuses such stacks; this guards a plug-in strategy that slips through.
            raise FlowerError("this strategy sends tensors beside the state, which SecAgg+ rounds do not "
                              "carry; set secure_aggregation=false")
        clip = server.job.cfg.flower.secagg_clip_range
        ins = {nid: fit_ins(tasks[cid].state, None if nid in self.has_setup else tasks[cid].setup, server.name, cid,
                            self.cfg_yaml, tasks[cid].settings, self.labels, clip)
               for cid, nid in targets.items()}
        if len(ins) < 2:
            return {}, None
        max_weight = max(len(p) for p in server.job.parts)  # every weight ≤ 1: no overflow
        result = secagg_round(self.grid, self.context, rnd, ins, threshold=need, clip_range=clip,
                              max_weight=max_weight, timeout=self.timeout)
        client_of = {nid: cid for cid, nid in targets.items()}
        updates = {client_of[nid]: Update(state={}, num_examples=res.num_examples,
                                          metrics=dict(res.metrics))  # as sent: validation judges them
                   for nid, res in result.replies}
        self.has_setup |= {nid for nid, _ in result.replies}
        if result.average is None:
            self.problems.append("SecAgg+ stopped: too few clients completed its stages")
            return updates, None
        names = wire.ordered_names(server.state)
        return {c: updates[c] for c in sorted(updates)}, apply_average(server.state, names, result.average)


def drive_method(grid: Grid, job: Job, method: str, run_dir: RunDir, context: Context | None = None,
                 log=print) -> dict[str, Any]:
    """Run (or resume) one method over the Grid; returns its result record (also in result.json)."""
    cfg = job.cfg
    server = ServerRun(job, method, run_dir, log=log)
    stop_file(run_dir, method).unlink(missing_ok=True)
    nodes = NodeMap(grid, cfg.num_clients, cfg.flower.round_timeout_s, log=log)
    # A client's private tensors (FedSA-LoRA's B and head) stay on its node: the nodes score its model
    # (GridTransport.personal_scores, asked by the server's evaluation).
    transport = GridTransport(grid, server, nodes, context, log=log)
    try:
        nodes.wait(min_replies(cfg))
        return server.run(transport)
    except FederaError as err:
        # The federation, not the method, failed: no result.json, so a resume continues it.
        reason = f"{err}; rounds up to {server.round} are saved"
        log(f"[{method}] stopped: {reason}")
        run_dir.write_json(stop_file(run_dir, method), {"method": method, "round": server.round, "reason": reason})
        return {**server.info(), "status": "stopped", "rounds": server.round, "reason": reason}


def stop_file(run_dir: RunDir, method: str) -> Path:
    """Why a method's Flower run stopped early (removed when the method runs again)."""
    return run_dir.method_dir(method) / "flower_stopped.json"
