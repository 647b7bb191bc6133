"""federa's Flower ClientApp: a SuperNode trains its own shard with federa's ``local_update``.

A node learns everything from the message except its data: the server sends the federa config
(as YAML), the method, the client id it picked and the global trainables. The node rebuilds the
same :class:`~federa.job.Job` as the server (same data source, partitioner and seed) and uses
only ``job.shard(partition-id)``; or, when its node config names a ``data-path``, all of that
node-local file. Its model is the pretrained base plus the method applied with the server's
broadcast setup (for FeDeRA the SVD factors: a node never computes its own SVD).

Node config keys (``flower-supernode --node-config '...'``):
``partition-id``, ``num-partitions`` (required), ``data-path``, ``model-path``, ``memory-dir``
(optional; where a strategy's per-client memory, e.g. SCAFFOLD's cᵢ, is kept: see
:mod:`.node_memory`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federa.errors import ConfigError, DataError, FederaError

# torch, transformers and the rest are imported inside the handlers: a deployment SuperNode
# starts a fresh process per message, and a discovery query needs none of them.


class NodeCache:
    """Jobs and models this process has built, keyed by everything that determines them.

    A deployment SuperNode starts a fresh process per message, so there this only saves work
    within one message; in simulation a Ray actor serves many messages and reuses entries.
    """

    def __init__(self, size: int = 2) -> None:
        self._size = size
        self._items: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, key: tuple, build: Callable[[], Any]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = build()
        self._items[key] = value
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()


# One cache per process (see NodeCache); never consulted for correctness, only for speed.
_JOBS = NodeCache()
_MODELS = NodeCache()


def node_partition(node_config: dict[str, Any]) -> tuple[int, int]:
    """(partition-id, num-partitions) from the node config, or a ConfigError saying how to set them."""
    try:
        pid, num = int(node_config["partition-id"]), int(node_config["num-partitions"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            "this SuperNode has no integer partition-id/num-partitions; start it with "
            "--node-config 'partition-id=K num-partitions=N'"
        ) from None
    if not 0 <= pid < num:
        raise ConfigError(f"node config partition-id={pid} is outside 0..{num - 1}; fix --node-config")
    return pid, num


def _overrides(node_config: dict[str, Any]) -> list[str]:
    """Node-local settings that replace the server's: the model folder and the data file."""
    out = []
    if node_config.get("model-path"):
        out.append(f"model.path={node_config['model-path']}")
    if node_config.get("data-path"):
        # The node's own file is its whole shard: one client, nothing to partition, nothing held
        # out (the server, which scores held-out client splits, never sees this file).
        out += [f"data.path={node_config['data-path']}", "data.hub=", "num_clients=1",
                "clients_per_round=1", "partition.kind=iid", "partition.client_val_fraction=0"]
    return out


def node_shard(cfg_yaml: str, node_config: dict[str, Any], client_id: int, label_names: list[str]):
    """(job key, job, shard) for the client this node holds."""
    import yaml

    from federa.config import build_config
    from federa.job import prepare_job

    pid, num = node_partition(node_config)
    if pid != client_id:
        raise ConfigError(f"server asked this node for client {client_id} but it holds partition-id={pid}")
    overrides = _overrides(node_config)
    key = (cfg_yaml, tuple(overrides))

    job = _JOBS.get(key, lambda: prepare_job(build_config(yaml.safe_load(cfg_yaml), overrides)))
    if not node_config.get("data-path") and num != job.cfg.num_clients:
        raise ConfigError(
            f"node config num-partitions={num} but the run has num_clients={job.cfg.num_clients}; "
            "restart the SuperNodes with matching num-partitions"
        )
    if job.label_names != label_names:
        raise DataError(
            f"this node's labels {job.label_names} differ from the server's {label_names}; "
            "give every node data with the same label set"
        )
    return key, job, job.shard(0 if node_config.get("data-path") else client_id)


def node_setup(content: RecordDict, context: Context, method: str) -> dict:
    """The method's broadcast setup: sent once per node and run, then kept in the node's state."""
    from federa.engines.flower import wire

    key = f"federa.setup.{method}"
    if wire.SETUP in content.array_records:
        context.state.array_records[key] = content.array_records[wire.SETUP]
    if key not in context.state.array_records:
        raise RuntimeError(f"no setup for method {method} on this node (the server sends it on first contact)")
    return wire.record_state(context.state.array_records[key])


class NodeModel:
    """A node's model and the unfolded frozen weights under the base fold it holds (FedEx-LoRA).

    ``initial_private``: what a method variant keeps on each client (FedSA-LoRA's B and head) as the
    model was built, copied before any training. A client with no memory yet starts from these, as
    the in-process strategy hands a never-sampled client its ``start_private`` values; the model's
    own tensors will not do, since a cached model holds the last client's trained B."""

    def __init__(self, model, initial_private: dict) -> None:
        self.model, self.originals, self.initial_private = model, {}, initial_private

    def with_fold(self, fold: dict):
        """The model with exactly ``fold`` on its frozen weights (this node's earlier fold replaced)."""
        from federa.strategies.fedex import apply_base_fold

        if fold or self.originals:
            self.originals = apply_base_fold(self.model, fold, self.originals)
        return self.model


def node_model(job_key: tuple, job, method: str, setup: dict, stage: int = 0) -> NodeModel:
    """The node's model of ``method`` at ``stage`` (a multi-stage method, SLoRA, switches models)."""
    from federa.methods.base import private_tensors

    def build() -> NodeModel:
        model = job.client_model(method, setup, stage)  # records the names its variant keeps private
        return NodeModel(model, private_tensors(model, job.private_names.get(method, ())))

    digest = hashlib.sha256(b"".join(setup[k].numpy().tobytes() for k in sorted(setup))).hexdigest()
    return _MODELS.get((job_key, method, digest, stage), build)


def client_rule(cfg, method: str):
    """The run's client rule for ``method`` (None: plain local training), from the config the
    server sent: the same stack the server builds, so any strategy's rule runs here unchanged."""
    from federa.strategies.per_method import method_stack

    return method_stack(cfg, method).client_hook.client_rule


def train_content(content: RecordDict, context: Context) -> RecordDict:
    """One local update, from a plain federa train message.

    The strategy's client hook runs as in-process: its rule is built from the global state, the
    ``payload`` the server sent and the memory this node kept for the client (node_memory); the
    reply carries the rule's ``extra`` and the node keeps its new memory. The base ``fold``, if
    any, is put on the frozen weights first, so the node holds the server's frozen weights.
    """
    from federa.client import local_update
    from federa.engines.flower import wire
    from federa.engines.flower.node_memory import NodeMemory

    rec = content.config_records[wire.SETTINGS]
    method, cid = str(rec["method"]), int(rec["client_id"])
    setup = node_setup(content, context, method)
    key, job, shard = node_shard(str(rec["config_yaml"]), context.node_config, cid, list(rec["label_names"]))
    rnd = int(rec.get("round", 0))
    # The round tells the stage: at SLoRA's switch the node builds the stage-2 model itself.
    stage = job.stage_of(method, rnd)
    node = node_model(key, job, method, setup, stage)
    model = node.with_fold(wire.optional_state(content, wire.FOLD))
    state, settings = wire.record_state(content.array_records[wire.STATE]), wire.record_settings(rec)
    rule_class, memory, rule = client_rule(job.cfg, method), None, None
    if rule_class is not None:
        # A new stage's tensors are new: memory of the old ones (SCAFFOLD's cᵢ) is not carried over,
        # as the server restarts its strategy at the switch.
        memory = NodeMemory(context, str(rec.get("run_token", "")), method if stage == 0 else f"{method}@{stage}", cid)
        # No memory yet: SCAFFOLD reads {} as cᵢ = 0; FedSA-LoRA starts from B and head as built.
        kept = memory.load(rnd) or node.initial_private
        rule = rule_class(state, wire.optional_state(content, wire.PAYLOAD), kept, settings)
    update = local_update(model, state, shard, job.collate, settings, job.device, client_id=cid, rule=rule)
    if memory is not None:
        memory.keep(rnd, update.memory)
    return wire.update_content(update)


def evaluate_content(content: RecordDict, context: Context) -> RecordDict:
    """Score this node's client's personalised model (FedSA-LoRA): global state + its own private tensors.

    The server never holds a client's B and head, so it asks the node: the model is the global
    ``state`` with the private tensors the client kept after its last completed round (its
    start values if it has not trained), scored on the client's held-out split (``val.<metric>``)
    and, when ``test`` is set, on the run's test set (``test.<metric>``). A node with its own data
    file holds no copy of the server's test set and no held-out split: it reports neither.
    """
    from federa.engines.flower import wire
    from federa.engines.flower.node_memory import NodeMemory
    from federa.methods.base import load_tensors, load_trainable_state

    rec = content.config_records[wire.SETTINGS]
    method, cid, rnd = str(rec["method"]), int(rec["client_id"]), int(rec["round"])
    setup = node_setup(content, context, method)
    key, job, _ = node_shard(str(rec["config_yaml"]), context.node_config, cid, list(rec["label_names"]))
    node = node_model(key, job, method, setup, job.stage_of(method, rnd))
    model = node.with_fold(wire.optional_state(content, wire.FOLD))
    load_trainable_state(model, wire.record_state(content.array_records[wire.STATE]))
    # The memory round rnd left (peek: evaluation runs before the server checkpoints round rnd, so
    # nothing may be dropped yet), or the start values of a client that has not trained.
    load_tensors(model, NodeMemory(context, str(rec["run_token"]), method, cid).peek(rnd + 1) or node.initial_private)
    own_data = bool(context.node_config.get("data-path"))
    cfg = job.cfg
    metrics: dict[str, float] = {}
    splits = {"val": None if own_data else job.client_val(cid),
              "test": job.test if bool(rec["test"]) and not own_data else None}
    for prefix, data in splits.items():
        if data is not None:
            scores = job.task.evaluate(model, data, job.collate, job.label_names, cfg.eval_batch_size, job.device,
                                       cfg.model.precision)
            metrics.update({f"{prefix}.{k}": float(v) for k, v in scores.items()})
    return RecordDict({wire.METRICS: MetricRecord(metrics)})


def secagg_when_requested(msg: Message, context: Context, call_next) -> Message:
    """Flower's secaggplus_mod, applied only to messages that belong to a SecAgg+ round."""
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def _error(msg: Message, err: FederaError) -> Message:
    # A problem the user must fix (or a NaN loss) goes back as text, so the server can stop
    # with this one line instead of a remote traceback.
    return Message(RecordDict({"error": ConfigRecord({"kind": type(err).__name__, "message": str(err)})}),
                   reply_to=msg)


app = ClientApp(mods=[secagg_when_requested])


@app.train()
def train(msg: Message, context: Context) -> Message:
    try:
        if "fitins.config" in msg.content.config_records:  # a SecAgg+ round (legacy record layout)
            from federa.engines.flower.secagg import train_secagg

            return Message(train_secagg(msg.content, context, train_content), reply_to=msg)
        return Message(train_content(msg.content, context), reply_to=msg)
    except FederaError as err:
        return _error(msg, err)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    try:
        return Message(evaluate_content(msg.content, context), reply_to=msg)
    except FederaError as err:
        return _error(msg, err)


@app.query("discover")
def discover(msg: Message, context: Context) -> Message:
    try:
        pid, num = node_partition(context.node_config)
    except FederaError as err:
        return _error(msg, err)
    return Message(RecordDict({"node": ConfigRecord({"partition_id": pid, "num_partitions": num,
                                                     "data_path": str(context.node_config.get("data-path", ""))})}),
                   reply_to=msg)
