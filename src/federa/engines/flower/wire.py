"""What travels between federa's ServerApp and ClientApp, as Flower records.

One train message carries: ``settings`` (ConfigRecord: method, client id, round, the run's
token, the federa config as YAML, the client's TrainSettings), ``state`` (ArrayRecord: the
global trainable tensors), the first time a node works on a method ``setup`` (ArrayRecord: e.g.
FeDeRA's SVD factors), and, when the strategy has them, ``payload`` (its ``client_payload``,
e.g. SCAFFOLD's c) and ``fold`` (its ``base_fold``, FedEx-LoRA's residual folded into frozen
weights). The reply carries ``state`` (ArrayRecord: the client's trainable tensors), ``extra``
(ArrayRecord, when the client rule sends tensors up: SCAFFOLD's Δcᵢ) and ``metrics``
(MetricRecord: example count and training metrics), or ``error`` (ConfigRecord) for a problem
the user must fix. Nothing else crosses the wire: a client's memory stays on its node.

An evaluate message (only for a method whose clients keep private tensors, FedSA-LoRA) carries
``settings`` (:func:`evaluate_record`), ``state`` and, as a train message, ``setup``/``fold`` when
needed; the reply's ``metrics`` are the node's scores of its client's personalised model
(``val.<metric>``: its held-out split; ``test.<metric>``: the run's test set, when asked).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from federa.types import State, TrainSettings, Update

SETTINGS, STATE, SETUP, METRICS, ERROR = "settings", "state", "setup", "metrics", "error"
PAYLOAD, FOLD, EXTRA = "payload", "fold", "extra"
# Query sent once to every node: "which client (partition) do you hold?"
DISCOVER = "query.discover"


def state_record(state: State) -> ArrayRecord:
    # ArrayRecord serialises contiguous CPU tensors; the bytes round-trip exactly.
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in state.items()})


def record_state(record: ArrayRecord) -> State:
    return dict(record.to_torch_state_dict())


def settings_record(method: str, client_id: int, cfg_yaml: str, settings: TrainSettings,
                    label_names: list[str], rnd: int = 0, run_token: str = "") -> ConfigRecord:
    """``rnd`` and ``run_token`` let the node find the memory its client kept (node_memory)."""
    # ConfigRecord holds no None: unset settings (e.g. local_epochs) are left out.
    values: dict[str, Any] = {k: v for k, v in asdict(settings).items() if v is not None}
    return ConfigRecord({"method": method, "client_id": client_id, "round": rnd, "run_token": run_token,
                         "config_yaml": cfg_yaml, "label_names": list(label_names),
                         **{f"s.{k}": v for k, v in values.items()}})


def evaluate_record(method: str, client_id: int, cfg_yaml: str, label_names: list[str], rnd: int, run_token: str,
                    test: bool) -> ConfigRecord:
    """An evaluate message's settings: whose personalised model to score after round ``rnd`` (FedSA-LoRA),
    and whether on the run's test set too (``test``) or on the client's held-out split only."""
    return ConfigRecord({"method": method, "client_id": client_id, "round": rnd, "run_token": run_token,
                         "config_yaml": cfg_yaml, "label_names": list(label_names), "test": test})


def record_settings(record: ConfigRecord) -> TrainSettings:
    names = {f.name for f in fields(TrainSettings)}
    return TrainSettings(**{k[2:]: v for k, v in record.items() if k.startswith("s.") and k[2:] in names})


def optional_state(content: RecordDict, key: str) -> State:
    """The tensors under ``key``, or {} when the message has none (an empty state is not sent)."""
    return record_state(content.array_records[key]) if key in content.array_records else {}


def update_content(update: Update) -> RecordDict:
    """The reply: state, metrics and the client rule's extra tensors; never ``update.memory``."""
    metrics = {k: float(v) for k, v in update.metrics.items()}
    content = RecordDict({STATE: state_record(update.state),
                          METRICS: MetricRecord({"num_examples": int(update.num_examples), **metrics})})
    if update.extra:
        content.array_records[EXTRA] = state_record(update.extra)
    return content


def content_update(content: RecordDict) -> Update:
    """The reply as an Update, values exactly as sent: the server's validation judges them.

    Nothing is converted here, since a conversion would hide a forgery (int(3.7) is a valid
    count of 3, float(10**400) raises); a missing count arrives as None and is rejected.
    """
    metrics = dict(content.metric_records[METRICS]) if METRICS in content.metric_records else {}
    num_examples = metrics.pop("num_examples", None)
    return Update(state=optional_state(content, STATE), num_examples=num_examples,  # type: ignore[arg-type]
                  metrics=metrics, extra=optional_state(content, EXTRA))


# The kind content_error gives an error record that lacks its kind or message (a broken or hostile node).
MALFORMED = "MalformedReply"


def _show(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def content_error(content: RecordDict) -> tuple[str, str] | None:
    """(kind, message) of an error reply, or None; a record without string ``kind`` and ``message``
    comes back as kind :data:`MALFORMED`, never as a KeyError."""
    if ERROR not in content.config_records:
        return None
    rec = content.config_records[ERROR]
    kind, message = rec.get("kind"), rec.get("message")
    if not isinstance(kind, str) or not isinstance(message, str):
        return MALFORMED, f"malformed error record (kind {_show(kind)}, message {_show(message)})"
    return kind, message


def node_info(content: RecordDict) -> tuple[int, int, str]:
    """A discovery reply's (partition-id, num-partitions, data-path); ValueError naming what is wrong
    when the reply is not one (no ``node`` record, a partition-id of 'abc' or -1, ...)."""
    if "node" not in content.config_records:
        raise ValueError("no node record")
    rec = content.config_records["node"]
    pid, num, data_path = rec.get("partition_id"), rec.get("num_partitions"), rec.get("data_path", "")
    # bool is an int to Python, and int('7') or int(2.5) would hide a forgery: only true integers pass.
    for name, v in (("partition_id", pid), ("num_partitions", num)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} is {_show(v)}, not an integer")
    if pid < 0 or num < 1:
        raise ValueError(f"partition_id={pid}, num_partitions={num}: expected 0 <= partition_id, 1 <= num_partitions")
    if not isinstance(data_path, str):
        raise ValueError(f"data_path is {_show(data_path)}, not a string")
    return pid, num, data_path


def ordered_names(state: State) -> list[str]:
    """A fixed tensor order, for protocols that work on a plain list of arrays (SecAgg+)."""
    return sorted(state)
