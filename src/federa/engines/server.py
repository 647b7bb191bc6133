"""The server side of one method's federated run, and the one round loop of every engine.

:class:`ServerRun` owns the global trainable state, the strategy, the ledger (bytes, modelled
time, totals: :mod:`federa.accounting`) and the results folder. :meth:`ServerRun.run` is the
round loop: plan the round (a :class:`~federa.engines.transport.ClientTask` per sampled
client) → the engine's transport trains them and brings the replies back →
:meth:`ServerRun.complete_round`: validate → aggregate → account → evaluate → checkpoint.
An engine is only a transport (:mod:`federa.engines.transport`); it never sees the strategy.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from importlib import import_module
from typing import Any

from safetensors.torch import save_file

from federa.accounting import Downlink, Ledger, RoundReplies, Totals
from federa.checkpoint import load_checkpoint, save_checkpoint
from federa.engines.transport import ClientTask, ScoreTask, Transport, min_replies
from federa.errors import NonFiniteLossError
from federa.events import Events
from federa.export import self_contained_adapter
from federa.job import Job
from federa.client_eval import evaluate_clients, node_metrics
from federa.eval_split import eval_rows
from federa.methods.base import (
    count_parameters, load_tensors, load_trainable_state, private_tensors, state_bytes,
    trainable_state,
)
from federa.results_dir import RunDir
from federa.methods.variants import VARIANTS, split_method
from federa.strategies.base import Strategy
from federa.strategies.fedex import apply_base_fold
from federa.strategies.per_method import method_stack
from federa.strategies.validate import check_count, check_metrics, counted_metrics, step_examples, weight_cap
from federa.types import State, TrainSettings, Update
from federa.weight_files import write_checksums

def mean_metrics(scored: list[tuple[dict[str, float], int]]) -> dict[str, float]:
    """Each metric averaged over models, each weighted by the clients that hold it; one model's
    metrics come back as they are (no float rounding for the usual single global model)."""
    if len(scored) == 1:
        return dict(scored[0][0])
    total = sum(n for _, n in scored)
    return {k: sum(m[k] * n for m, n in scored) / total for k in scored[0][0]}


class ServerRun:
    """Global state of one method: built fresh, or resumed from its last checkpoint."""

    def __init__(self, job: Job, method_name: str, run_dir: RunDir, log=print) -> None:
        cfg = job.cfg
        self.job, self.name, self.run_dir, self.log = job, method_name, run_dir, log
        self.method, self.model, self.setup = job.server_model(method_name)
        self.strategy = self._new_strategy()
        self._stage = 0  # a multi-stage method's current stage (SLoRA: 0 sparse, 1 LoRA)
        self.settings = self._stage_settings(0)
        # The partition the server computed: a reply weighs at most its client's shard.
        self.shard_sizes: dict[int, int] = {}
        sizes = {c: len(p) for c, p in enumerate(job.parts)}
        self.register_shards({**sizes, job.pooled_id: sum(sizes.values())})  # a centralized baseline's machine: all
        self.state = trainable_state(self.model)
        self.trainable, self.total = count_parameters(self.model)
        # What a variant keeps on each client (FedSA-LoRA's B and head): frozen here, trained there;
        # the strategy holds every simulated client's copy, starting from these values.
        variant = split_method(method_name)[1]
        private = private_tensors(self.model, job.private_names.get(method_name, ()))
        self.strategy.personal.start_private(private)
        self._start_frozen()
        # A baseline (+local, +centralized) sends nothing anywhere: its bytes are 0 by definition.
        self.travels = VARIANTS[variant].travels if variant else True
        self.ledger = Ledger(cfg.network, cfg.num_clients, cfg.seed, self.travels)  # bytes, time, trajectory, totals
        self.private_names = sorted(private)
        self.trainable += sum(t.numel() for t in private.values())
        # The transport :meth:`run` drives; when its clients keep their private tensors where the server
        # cannot read them (Flower's nodes), the clients score their personalised models themselves.
        self.transport: Transport | None = None
        self._folded: State = {}  # the unfolded frozen weights under the strategy's base fold (FedEx-LoRA)
        # Names this run (and its resumes) to the Flower nodes that keep a client's memory on disk.
        self.run_token = uuid.uuid4().hex
        self.round = 0
        self.last_metrics: dict[str, float] = {}
        run_dir.method_dir(method_name).mkdir(parents=True, exist_ok=True)
        if not self._resume():
            self._log_round(0, self._evaluate(), {})
            self._checkpoint()

    # -- lifecycle -----------------------------------------------------------------------

    def _resume(self) -> bool:
        payload, warning = load_checkpoint(self.run_dir.checkpoint(self.name))
        kept = [r for r in self.run_dir.read_metrics() if r.get("method") != self.name]
        if payload is None:
            self.run_dir.rewrite_metrics(kept)  # lines from a start that never checkpointed
            return False
        if warning:
            self.log(f"[{self.name}] {warning}")
        self.round = payload["round"]
        self.run_token = payload.get("run_token", self.run_token)
        for stage in range(1, self.method.stage_of(self.round) + 1):
            self._enter_stage(stage)  # the checkpointed state is of that stage's model
        self.state = payload["state"]
        load_trainable_state(self.model, self.state)
        self.strategy.load_state_dict(payload["strategy"])
        self._folded = apply_base_fold(self.model, self.strategy.frozen.base_fold(), self._folded)
        load_tensors(self.model, self.strategy.personal.client_private(None))
        self.ledger.totals = Totals.from_dict(payload["totals"])
        self.last_metrics = payload["last_metrics"]
        self.ledger.trajectory.load_state_dict(payload.get("trajectory", {}))
        # Keep this method's lines up to the checkpointed round: a line written after it
        # belongs to a round that will be run again.
        mine = [r for r in self.run_dir.read_metrics() if r.get("method") == self.name and r["round"] <= self.round]
        self.run_dir.rewrite_metrics(kept + mine)
        self.log(f"[{self.name}] resumed after round {self.round}")
        return True

    def _checkpoint(self) -> None:
        save_checkpoint(self.run_dir.checkpoint(self.name), {
            "method": self.name, "round": self.round, "state": self.state,
            "strategy": self.strategy.state_dict(), "totals": self.ledger.totals.as_dict(),
            "last_metrics": self.last_metrics, "run_token": self.run_token,
            # The last global update, so the first resumed round's update_cos equals the uninterrupted run's.
            "trajectory": self.ledger.trajectory.state_dict(),
        })

    def register_shards(self, sizes: Mapping[int, int]) -> None:
        """Client id → registered shard size (clients with their own data file have none)."""
        self.shard_sizes = dict(sizes)
        self.strategy.register_shards(self.shard_sizes)

    def weight(self, client: int, update: Update) -> int:
        """The weight ``update`` counts with: its claim, capped as validation caps it."""
        cap = weight_cap(client, self.shard_sizes, step_examples(self.settings))
        return update.num_examples if cap is None else min(update.num_examples, cap)

    def remaining_rounds(self) -> Iterator[int]:
        return iter(range(self.round + 1, self.job.cfg.rounds + 1))

    def _new_strategy(self) -> Strategy:
        # The strategy inside its wrappers (validation, clipping, DP, ...); a method variant
        # (federa+rolora) may bring its own aggregation rule, an @aggregator its own (federa@fedadam).
        return method_stack(self.job.cfg, self.name)

    def _start_frozen(self) -> None:
        """Hand the strategy the frozen tensors it moves (FedSVD's A), as every party builds them."""
        if fragments := self.strategy.frozen.reads_frozen:
            self.strategy.frozen.start_frozen({n: p.detach().cpu().clone() for n, p in self.model.named_parameters()
                                               if not p.requires_grad and any(f in n for f in fragments)})

    def _stage_settings(self, stage: int) -> TrainSettings:
        base = self.job.train_settings(self.name)
        return replace(base, lr=self.method.stage_lr(stage, base.lr))

    def _enter_stage(self, stage: int) -> None:
        """A multi-stage method's boundary: the method builds the new model and its initial state
        from the old ones. The strategy starts afresh, since what it kept per tensor (server
        moments, control variates) belonged to tensors that no longer train; DP's ε depends on
        the round number alone, so its accounting goes on."""
        self.model, self.state, self.setup = self.method.next_stage(stage, self.model, self.state, self.setup)
        self.model.to(self.job.device)
        self.strategy = self._new_strategy()
        self.strategy.register_shards(self.shard_sizes)
        self._start_frozen()
        self.settings = self._stage_settings(stage)
        self.trainable, self.total = count_parameters(self.model)
        self._stage = stage

    # -- the round loop, for every engine ------------------------------------------------

    def run(self, transport: Transport, events: Events | None = None) -> dict[str, Any]:
        """Run (or resume) this method to its last round over ``transport``; its result record.

        Each round: plan (sample clients, build their tasks) → the transport trains them →
        :meth:`complete_round`. A method whose clients' losses diverge (too few valid replies)
        fails here; any other :class:`~federa.errors.FederaError` (a federation that went away)
        reaches the caller, with every finished round checkpointed."""
        events = events if events is not None else Events()
        self.transport = transport
        need = min_replies(self.job.cfg)
        shards = dict(self.shard_sizes)
        result = None
        events.method_start(self.name, self.job.cfg.rounds, self.round, self.progress_postfix())
        try:
            for rnd in self.remaining_rounds():
                events.round_start(rnd)
                started = time.perf_counter()
                tasks = self.plan(rnd, with_rules=not transport.keeps_client_memory)
                # A client that brought its own data (a Flower node's data file) has no shard in the
                # server's partition: its weight is capped by local_steps × batch_size only.
                own_data = transport.start_round(rnd)
                self.register_shards({c: n for c, n in shards.items() if c not in own_data})
                replies = transport.train(rnd, tasks)
                if not transport.keeps_client_memory:
                    # A simulated client's memory (SCAFFOLD's cᵢ) is kept for it by the strategy, which
                    # checkpoints it; a Flower node keeps its own.
                    for cid in tasks:
                        if cid in replies.updates:
                            self.strategy.client_hook.keep_client_memory(cid, replies.updates[cid].memory)
                transport.check(rnd, tasks, replies, need, self.log, self.name)
                record = self.complete_round(rnd, replies.updates, started, aggregate=replies.aggregate)
                transport.round_done(rnd, tasks, replies, record)
                events.round_end(rnd, record, self.progress_postfix())
            result = self.finish()
        except NonFiniteLossError as err:  # resuming cannot help: the losses would diverge again
            self.log(f"[{self.name}] stopped: {err}")
            result = self.fail(str(err))
        finally:
            transport.close()
            events.method_end(self.name, result)
        return result

    def plan(self, rnd: int, with_rules: bool = True) -> dict[int, ClientTask]:
        """The round's sampled clients (client-id order), each with what it receives. ``with_rules``:
        build each client's strategy rule here, with the memory the strategy keeps for it."""
        fold = self.strategy.frozen.base_fold()
        tasks = {}
        for cid, settings in self.configure(rnd).items():
            payload = self.payload(rnd, cid)
            rule = self.strategy.client_hook.client_rule
            if rule is not None and with_rules:
                rule = rule(self.state, payload, self.strategy.client_hook.client_memory(cid), settings)
            tasks[cid] = ClientTask(settings=settings, state=self.client_state(rnd, cid), payload=payload, fold=fold,
                                    setup=self.setup, rule=rule if with_rules else None)
        return tasks

    def score_tasks(self, clients: Iterable[int], test: set[int]) -> dict[int, ScoreTask]:
        """What each of ``clients`` is sent to score its personalised model on its own side (after the
        last finished round); ``test``: the clients that score the test set too."""
        fold = self.strategy.frozen.base_fold()
        return {c: ScoreTask(state=self.client_state(self.round, c), fold=fold, setup=self.setup, test=c in test)
                for c in clients}

    def private_on_clients(self) -> bool:
        """Whether each client keeps its private tensors (FedSA-LoRA's B) where the server cannot read
        them (a Flower node): then the clients score their personalised models and keep their copies."""
        return self.transport is not None and self.transport.keeps_client_memory

    # -- one round -----------------------------------------------------------------------

    def configure(self, rnd: int) -> dict[int, TrainSettings]:
        if (stage := self.method.stage_of(rnd)) != self._stage:
            self._enter_stage(stage)  # before round rnd's broadcast; its checkpoint holds the new stage
            self.log(f"[{self.name}] round {rnd} starts stage {stage + 1}")
        return self.strategy.configure_round(rnd, range(self.job.cfg.num_clients), self.settings)

    def payload(self, rnd: int, client: int) -> State:
        """What the strategy sends ``client`` beside the global state this round (often nothing)."""
        return self.strategy.client_hook.client_payload(rnd, client, self.state)

    def client_state(self, rnd: int, client: int) -> State:
        """The trainable state ``client`` starts from (the global one, or its rank's factors)."""
        return self.strategy.client_hook.client_state(rnd, client, self.state)

    def down_bytes(self, rnd: int, client: int) -> int:
        """Bytes sent to ``client`` beside the state: its payload and the base fold (FedEx-LoRA's
        folded residual, which every client needs in full to hold the server's frozen weights)."""
        return state_bytes(self.payload(rnd, client)) + state_bytes(self.strategy.frozen.base_fold())

    def complete_round(self, rnd: int, updates: Mapping[int, Update], started: float,
                       aggregate: State | None = None) -> dict[str, Any]:
        """validate → aggregate → account → evaluate → checkpoint, for ``updates`` (client id → reply).

        ``aggregate``: the new global state when the transport already aggregated (SecAgg+
        gives only the sum); ``updates`` then carry counts and metrics but no tensors.
        """
        cfg = self.job.cfg
        sent = self._downlink(rnd, updates)  # before aggregation moves the strategy's state on
        t_agg = time.perf_counter()
        new_state, strategy_metrics = self._aggregate(rnd, updates, aggregate)  # validation is the stack's first layer
        replies = self._judged(rnd, updates, strategy_metrics, aggregate)
        load_trainable_state(self.model, new_state)
        # FedEx-LoRA's fold onto the server's frozen weights; else nothing.
        self._folded = apply_base_fold(self.model, self.strategy.frozen.base_fold(), self._folded)
        t_eval = time.perf_counter()
        figures = self.ledger.account(rnd, replies, sent, self.state, new_state, strategy_metrics,
                                      {"round_s": t_eval - started, "aggregate_s": t_eval - t_agg})
        self.state, self.round = new_state, rnd
        record: dict[str, Any] = {}
        due = rnd % cfg.eval_every == 0 or rnd == cfg.rounds
        if due:
            metrics = self._evaluate()
            figures["eval_s"] = time.perf_counter() - t_eval
        self.ledger.totals.wall_s += time.perf_counter() - started
        if due:
            record = self._log_round(rnd, metrics, figures)
        self._checkpoint()
        return record

    def _downlink(self, rnd: int, updates: Mapping[int, Update]) -> Downlink:
        return Downlink(state={c: state_bytes(self.client_state(rnd, c)) for c in updates},
                        beside={c: self.down_bytes(rnd, c) for c in updates}, setup=state_bytes(self.setup))

    def _aggregate(self, rnd: int, updates: Mapping[int, Update],
                   aggregate: State | None) -> tuple[State, dict[str, Any]]:
        """The strategy stack's new global state and its figures (rejected clients, ε under DP, ...)."""
        if aggregate is None:
            new_state = self.strategy.aggregate_round(rnd, self.state, updates)
        else:
            new_state = self.strategy.finish_sum(rnd, self.state, aggregate)
        new_state = self.strategy.frozen.reparametrise(rnd, new_state)  # FedSVD's SVD, after DP's noise
        strategy_metrics = self.strategy.round_metrics(rnd)  # rejected clients, ε under DP, ...
        if aggregate is not None:
            # The sum hides each update, but counts and metrics still arrive one by one: a forged
            # one stays out of the counters and the train loss.
            forged = [{"client": c, "reason": why} for c, u in updates.items()
                      if (why := check_count(u.num_examples) or check_metrics(u.metrics)) is not None]
            strategy_metrics["rejected"] = [*strategy_metrics.get("rejected", []), *forged]
        return new_state, strategy_metrics

    def _judged(self, rnd: int, updates: Mapping[int, Update], strategy_metrics: Mapping[str, Any],
                aggregate: State | None) -> RoundReplies:
        """The replies split as validation judged them, each rejection logged."""
        rejected = {r["client"] for r in strategy_metrics.get("rejected", [])}
        for r in strategy_metrics.get("rejected", []):
            self.log(f"[{self.name}] round {rnd}: rejected client {r['client']}: {r['reason']}")
        accepted = {c: u for c, u in updates.items() if c not in rejected}
        # A rejected reply's figures may be forged (a list, NaN, negative): they count nowhere.
        counted = {c: counted_metrics(u, c in accepted) for c, u in updates.items()}
        if not accepted and "epsilon" not in strategy_metrics:
            self.log(f"[{self.name}] round {rnd}: no valid update; the global model is kept")
        return RoundReplies(updates=updates, accepted=accepted, weights={c: self.weight(c, u) for c, u in accepted.items()},
                            counted=counted, aggregate=aggregate)

    def progress_postfix(self) -> dict[str, str]:
        """What a progress bar shows after each round: the main metric, and ε under DP."""
        out = {self.job.main_metric: f"{self.last_metrics.get('score', float('nan')):.3f}"}
        epsilon = self.strategy.round_metrics(self.round).get("epsilon")
        if epsilon is not None:
            out["eps"] = f"{epsilon:.2f}"
        return out

    def _evaluate(self) -> dict[str, Any]:
        job = self.job
        if self.private_on_clients() and self.private_names and self.ledger.totals.contacted:
            # FedSA-LoRA on Flower: the clients' B live on their nodes, which score the personalised
            # models themselves (before any client trained, every B is the start value the server
            # holds too, and the server evaluates as in-process).
            trained = sorted(self.ledger.totals.contacted)
            held_out = any(len(v) for v in job.val_parts)
            tasks = self.score_tasks(range(job.cfg.num_clients) if held_out else trained, set(trained))
            replies = self.transport.personal_scores(self.round, tasks)
            self.last_metrics = node_metrics(replies, trained, job.cfg.num_clients, job.main_metric, held_out)
            return self.last_metrics
        scored = []
        test = eval_rows(job, self.round)  # the whole split, or eval_subset's fixed rows (federa.eval_split)
        # The global model (FedSA: global A with the clients' mean B), or with no global model (+local)
        # each client's own, averaged over clients.
        for private, clients in self.strategy.personal.test_privates():
            load_tensors(self.model, private)
            scored.append((job.task.evaluate(self.model, test, job.collate, job.label_names,
                                             job.cfg.eval_batch_size, job.device, job.cfg.model.precision), clients))
        load_tensors(self.model, self.strategy.personal.client_private(None))  # what is checkpointed and saved
        metrics = mean_metrics(scored)
        # "score" is the task's main metric under one name, for targets, claims, plots and reports;
        # with held-out client splits, each client's score too (its own model where it has one).
        if job.cfg.eval_subset is not None:
            metrics["eval_rows"] = len(test)
        self.last_metrics = {"score": metrics[job.main_metric], **metrics,
                             **evaluate_clients(job, self.model, self.strategy.personal.client_private)}
        return self.last_metrics

    def _log_round(self, rnd: int, metrics: dict[str, float], round_stats: dict[str, Any]) -> dict[str, Any]:
        record = {"method": self.name, "round": rnd, **metrics, **round_stats, **self.ledger.cumulative()}
        self.run_dir.append_metrics(record)
        return record

    # -- end -----------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Static facts of the method: what trains, what travels."""
        return {
            "method": self.name,
            "trainable_params": self.trainable,
            "total_params": self.total,
            "trainable_pct": 100.0 * self.trainable / self.total,
            # Each way, per sampled client (the mean over clients, whose states differ by LoRA rank under
            # FLoRA/FlexLoRA/HetLoRA; the global state's size otherwise).
            "bytes_per_client_round": sum(state_bytes(self.client_state(self.round + 1, c))
                                          for c in range(self.job.cfg.num_clients)) // self.job.cfg.num_clients
            if self.travels else 0,
            "setup_bytes_per_client": state_bytes(self.setup) if self.travels else 0,  # once, at a client's first round
            "lr": self.settings.lr,
        }

    def finish(self) -> dict[str, Any]:
        final = self.run_dir.final_model(self.name)
        load_tensors(self.model, self.strategy.personal.client_private(None))
        with self._saveable() as model:
            self.method.save(model, final, self.setup)
        self_contained_adapter(final, self.model, self.job.model_path, self.job.tokenizer)
        if fold := self.strategy.frozen.base_fold():
            # FedEx-LoRA moved frozen weights too: the adapter alone is not the trained model.
            save_file({k: v.contiguous() for k, v in fold.items()}, str(final / "base_fold.safetensors"))
            (final / "base_fold.json").write_text(json.dumps({
                "how": "add each tensor of base_fold.safetensors to the frozen weight of that name in the peft "
                       "model (Conv1D weights transposed), then load the adapter; "
                       "federa.strategies.fedex.apply_base_fold(model, fold, {}) does it"}, indent=2))
        # Cloned: clients never sampled share the initial tensors, which safetensors refuses to save twice.
        personal = {f"client{c}/{k}": v.clone() for c in range(self.job.cfg.num_clients)
                    for k, v in self.strategy.personal.client_private(c).items()} if not self.private_on_clients() else {}
        if personal:  # FedSA-LoRA: each client's own B and head, for its personalised model
            save_file(personal, str(final / "client_private.safetensors"))
        elif self.private_names:
            # On Flower no client's B ever reaches the server: the adapter holds the shared part.
            (final / "private_on_nodes.json").write_text(json.dumps({
                "how": "this adapter holds the global (shared) tensors; the private ones (listed below) are at "
                       "their initial values. Each client's own copies stay on its node, under the node's memory-dir "
                       "(<key>/<round>.safetensors, federa.engines.flower.node_memory); load them over this "
                       "adapter for that client's personalised model",
                "private": self.private_names}, indent=2))
        write_checksums(final)  # last: it vouches for every file above
        result = {**self.info(), "status": "done", "rounds": self.round, "final_model": str(final)}
        if (samples := getattr(self.job.task, "samples_for", None)) is not None:  # generative tasks: report.md shows them
            result["samples"] = samples(self.job.test)
        self.run_dir.write_json(self.run_dir.result(self.name), result)
        return result

    def _saveable(self) -> AbstractContextManager[Any]:
        """The model in the form peft saves: a variant's extra layers (Fed-SB's R) merged into the adapter."""
        variant = split_method(self.name)[1]
        layers = VARIANTS[variant].layers if variant else None
        return import_module(layers).merged(self.model) if layers else nullcontext(self.model)

    def fail(self, reason: str) -> dict[str, Any]:
        result = {**self.info(), "status": "failed", "rounds": self.round, "reason": reason}
        self.run_dir.write_json(self.run_dir.result(self.name), result)
        return result
