"""The server half of the Flower engine: one method's rounds driven over Flower's Grid.

- :func:`drive_method` runs inside federa's ServerApp (a process the SuperLink starts). It is
  the in-process loop with the transport swapped: federa's :class:`ServerRun` plans each round
  (strategy sampling → client ids), the Grid carries the global trainables to the nodes that
  hold those clients, and the replies go back into ``ServerRun.complete_round``, which
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

import time
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from federa.types import Update
from federa.engines.server import ServerRun, min_replies  # noqa: F401 (min_replies: part of this module's API)
from federa.errors import FederaError, NonFiniteLossError
from federa.engines.flower import FlowerError, wire
from federa.engines.flower.nodes import NodeMap
from federa.job import Job
from federa.runlog import RunDir


class _Round:
    """Sends one round's work to the nodes and turns the replies into federa Updates."""

    def __init__(self, grid: Grid, server: ServerRun, nodes: NodeMap, context: Context | None, log=print) -> None:
        self.grid, self.server, self.nodes, self.context, self.log = grid, server, nodes, context, log
        job = server.job
        self.cfg_yaml, self.labels = job.cfg.to_yaml(), list(job.label_names)
        self.timeout = job.cfg.flower.round_timeout_s
        self.has_setup: set[int] = set()  # nodes that already hold this method's setup
        self.problems: list[str] = []
        self.nonfinite: list[int] = []  # clients whose loss became NaN/inf this round

    def _targets(self, plan: dict) -> dict[int, int]:
        return {cid: self.nodes.node_of[cid] for cid in plan if cid in self.nodes.node_of}

    def plain(self, rnd: int, plan: dict) -> dict[int, Update]:
        server, targets = self.server, self._targets(plan)
        msgs = []
        fold = server.strategy.base_fold()
        for cid, nid in targets.items():
            content = RecordDict({
                wire.SETTINGS: wire.settings_record(server.name, cid, self.cfg_yaml, plan[cid], self.labels,
                                                    rnd=rnd, run_token=server.run_token),
                wire.STATE: wire.state_record(server.client_state(rnd, cid)),  # its rank's factors, if its own
            })
            if nid not in self.has_setup:
                content.array_records[wire.SETUP] = wire.state_record(server.setup)
            # The strategy's client hook: what its rule needs (SCAFFOLD's c), and its base fold
            # (FedEx-LoRA), which the node must hold on its frozen weights. Both are in bytes_down.
            if payload := server.payload(rnd, cid):
                content.array_records[wire.PAYLOAD] = wire.state_record(payload)
            if fold:
                content.array_records[wire.FOLD] = wire.state_record(fold)
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

    def personal_scores(self, clients, test: set[int]) -> dict[int, dict[str, float]]:
        """Each node's scores of its client's personalised model (FedSA-LoRA), after the server's last
        round: ``val.<metric>`` for every client in ``clients``, ``test.<metric>`` too for those in
        ``test``. Not counted in the bytes: evaluation traffic is not part of the protocol (the
        in-process engine counts none either). A node that does not answer leaves its client unscored."""
        server = self.server
        rnd, fold = server.round, server.strategy.base_fold()
        targets = {cid: self.nodes.node_of[cid] for cid in clients if cid in self.nodes.node_of}
        msgs = []
        for cid, nid in targets.items():
            content = RecordDict({
                wire.SETTINGS: wire.evaluate_record(server.name, cid, self.cfg_yaml, self.labels, rnd,
                                                    server.run_token, cid in test),
                wire.STATE: wire.state_record(server.client_state(rnd, cid)),
            })
            if nid not in self.has_setup:  # a client never sampled yet still needs the model's setup
                content.array_records[wire.SETUP] = wire.state_record(server.setup)
            if fold:
                content.array_records[wire.FOLD] = wire.state_record(fold)
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

    def secure(self, rnd: int, plan: dict, need: int) -> tuple[dict[int, Update], dict | None]:
        from federa.engines.flower.secagg import apply_average, fit_ins, secagg_round

        server, targets = self.server, self._targets(plan)
        if server.strategy.base_fold() or any(server.payload(rnd, c) for c in targets):
            # The config check refuses such stacks; this guards a plug-in strategy that slips through.
            raise FlowerError("this strategy sends tensors beside the state, which SecAgg+ rounds do not "
                              "carry; set secure_aggregation=false")
        clip = server.job.cfg.flower.secagg_clip_range
        ins = {nid: fit_ins(server.state, None if nid in self.has_setup else server.setup, server.name, cid,
                            self.cfg_yaml, plan[cid], self.labels, clip)
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
    need = min_replies(cfg)
    server = ServerRun(job, method, run_dir, log=log)
    stop_file(run_dir, method).unlink(missing_ok=True)
    nodes = NodeMap(grid, cfg.num_clients, cfg.flower.round_timeout_s, log=log)
    rounds = _Round(grid, server, nodes, context, log=log)
    # A client's private tensors (FedSA-LoRA's B and head) stay on its node: the nodes score its model.
    server.node_scores = rounds.personal_scores
    shards = dict(server.shard_sizes)
    try:
        nodes.wait(need)
        for rnd in server.remaining_rounds():
            started = time.perf_counter()
            plan = server.configure(rnd)
            nodes.refresh()
            # A node with its own data file has no shard in the server's partition: its weight
            # is capped by local_steps × batch_size only (docs/reliability.md, threat model).
            server.register_shards({c: n for c, n in shards.items() if c not in nodes.own_data})
            rounds.problems, rounds.nonfinite = [], []
            if cfg.secure_aggregation:
                updates, aggregate = rounds.secure(rnd, plan, need)
            else:
                updates, aggregate = rounds.plain(rnd, plan), None
            silent = [c for c in plan if c not in updates]
            if len(updates) < need and rounds.nonfinite and len(updates) + len(rounds.nonfinite) >= need:
                # Short because losses diverged, not because nodes are away: resuming cannot help.
                raise NonFiniteLossError(
                    f"round {rnd}: only {len(updates)} of {len(plan)} sampled clients trained, fewer than "
                    f"flower.min_replies={need} (clients {sorted(rounds.nonfinite)} failed; first: {rounds.problems[0]})")
            if len(updates) < need or (cfg.secure_aggregation and aggregate is None):
                raise FlowerError(
                    f"round {rnd}: {len(updates)} of {len(plan)} sampled clients replied within "
                    f"{cfg.flower.round_timeout_s:.0f}s, flower.min_replies={need} (no reply: clients {silent}"
                    + (f"; {rounds.problems[0]}" if rounds.problems else "")
                    + ")"
                )
            for p in rounds.problems:
                log(f"[{method}] round {rnd}: {p}")
            if silent:
                log(f"[{method}] round {rnd}: no reply from client(s) {silent}; aggregating the other {len(updates)}")
            extra = {} if aggregate is None else {"aggregate": aggregate}
            record = server.complete_round(rnd, updates, started, **extra)
            log(f"[{method}] round {rnd}/{cfg.rounds}: {len(updates)}/{len(plan)} replies"
                + (f", {job.main_metric} {record['score']:.4f}" if record else ""))
    except NonFiniteLossError as err:  # as in-process: the method is over, resuming cannot help
        log(f"[{method}] stopped: {err}")
        return server.fail(str(err))
    except FederaError as err:
        # The federation, not the method, failed: no result.json, so a resume continues it.
        reason = f"{err}; rounds up to {server.round} are saved"
        log(f"[{method}] stopped: {reason}")
        run_dir.write_json(stop_file(run_dir, method), {"method": method, "round": server.round, "reason": reason})
        return {**server.info(), "status": "stopped", "rounds": server.round, "reason": reason}
    return server.finish()


def stop_file(run_dir: RunDir, method: str) -> Path:
    """Why a method's Flower run stopped early (removed when the method runs again)."""
    return run_dir.method_dir(method) / "flower_stopped.json"
