"""Secure aggregation with Flower's SecAgg+ (server side and client side of one round).

In flwr 1.42 SecAgg+ exists only as ``flwr.server.workflow.SecAggPlusWorkflow`` (server) and
``flwr.client.mod.secaggplus_mod`` (client). The workflow is written against the legacy
``Strategy`` API: it calls ``strategy.configure_fit`` for the sampled clients and hands the
unmasked *weighted average* to ``strategy.aggregate_fit``; it needs a ``LegacyContext``. It
does, however, only use the Grid to move Messages, so it runs inside federa's Message-API
ServerApp: for one round we wrap the clients federa's strategy sampled in a legacy adapter
(:class:`SampledClients`), run the four SecAgg+ stages, and read the average back. The
ClientApp applies ``secaggplus_mod`` only to messages that carry a SecAgg+ stage
(``client_app.secagg_when_requested``).

What each client contributes is its *delta* (new − global trainables), weighted by its example
count: the deltas are small, so a tight ``flower.secagg_clip_range`` keeps the quantisation
step small. Flower quantises each weighted delta into ``quantization_range`` (2**22) levels over
[-clip, clip] with stochastic rounding, so per coordinate the error of the average is at most
``n · 2·clip/2**22 · max_weight / Σ num_examples`` for n replies (:func:`error_bound`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from federa.types import TrainSettings
from federa import errors
from federa.errors import ConfigError
from federa.engines.flower import wire
from federa.types import State

QUANTIZATION_RANGE = 2**22  # SecAggPlusWorkflow's default, kept: its modulus is 2**32


def error_bound(num_replies: int, clip_range: float, max_weight: float, total_examples: int) -> float:
    """Largest per-coordinate gap between SecAgg+'s average and the exact weighted mean."""
    step = 2 * clip_range / QUANTIZATION_RANGE
    return num_replies * step * max_weight / total_examples


def _pack(state: State) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.cpu() for k, v in state.items()}, buf)
    return buf.getvalue()


def _unpack(data: bytes) -> State:
    return torch.load(io.BytesIO(data), weights_only=True)


def fit_ins(state: State, setup: State | None, method: str, client_id: int, cfg_yaml: str,
            settings: TrainSettings, label_names: list[str], clip_range: float) -> FitIns:
    """The legacy FitIns for one client: global trainables as a list, the rest in the config."""
    names = wire.ordered_names(state)
    rec = wire.settings_record(method, client_id, cfg_yaml, settings, label_names)
    config: dict[str, Any] = {k: v for k, v in rec.items() if k != "label_names"}
    config.update(label_names=json.dumps(label_names), names=json.dumps(names), clip_range=float(clip_range))
    if setup is not None:
        config["setup"] = _pack(setup)
    return FitIns(ndarrays_to_parameters([state[n].numpy() for n in names]), config)


class SampledClients(LegacyStrategy):
    """A legacy Strategy that only replays federa's sampling and captures SecAgg+'s result."""

    def __init__(self, grid: Grid, run_id: int, fitins: dict[int, FitIns]) -> None:
        self.grid, self.run_id, self.fitins = grid, run_id, fitins
        self.average: list[np.ndarray] | None = None
        self.replies: list[tuple[int, FitRes]] = []

    def initialize_parameters(self, client_manager):
        return None

    def configure_fit(self, server_round, parameters, client_manager):
        return [(GridClientProxy(nid, self.grid, self.run_id), ins) for nid, ins in self.fitins.items()]

    def aggregate_fit(self, server_round, results, failures):
        # SecAgg+ has replaced every reply's parameters by the unmasked weighted average.
        self.replies = [(proxy.node_id, res) for proxy, res in results]
        if results:
            self.average = parameters_to_ndarrays(results[0][1].parameters)
        return None, {}

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def secagg_round(grid: Grid, context: Context, rnd: int, fitins: dict[int, FitIns], *, threshold: int,
                 clip_range: float, max_weight: float, timeout: float) -> SampledClients:
    """Run the four SecAgg+ stages for the nodes in ``fitins``; the result is on the returned object."""
    strategy = SampledClients(grid, context.run_id, fitins)
    legacy = LegacyContext(context, strategy=strategy)
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: rnd})
    legacy.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()  # unused: FitIns carry the state
    workflow = SecAggPlusWorkflow(
        num_shares=1.0,  # every sampled client shares its keys with all others (small cohorts)
        reconstruction_threshold=max(2, threshold),
        max_weight=max_weight, clipping_range=clip_range, quantization_range=QUANTIZATION_RANGE,
        timeout=timeout,
    )
    workflow(grid, legacy)
    return strategy


def apply_average(state: State, names: list[str], average: list[np.ndarray]) -> State:
    """Global trainables + the securely averaged delta (added in float64, cast back)."""
    return {n: (state[n].to(torch.float64) + torch.from_numpy(np.asarray(a, dtype=np.float64))).to(state[n].dtype)
            for n, a in zip(names, average, strict=True)}


# -- client side ------------------------------------------------------------------------


def train_secagg(content: RecordDict, context: Context,
                 train_content: Callable[[RecordDict, Context], RecordDict]) -> RecordDict:
    """Train as usual, then reply the delta as a legacy FitRes for secaggplus_mod to mask."""
    ins = compat.recorddict_to_fitins(content, keep_input=True)
    cfg = dict(ins.config)
    names = json.loads(str(cfg.pop("names")))
    clip = float(cfg.pop("clip_range"))
    setup = cfg.pop("setup", None)
    cfg["label_names"] = json.loads(str(cfg["label_names"]))
    state = {n: torch.from_numpy(a.copy()) for n, a in zip(names, parameters_to_ndarrays(ins.parameters), strict=True)}
    plain = RecordDict({wire.SETTINGS: ConfigRecord(cfg), wire.STATE: wire.state_record(state)})
    if setup is not None:
        plain.array_records[wire.SETUP] = wire.state_record(_unpack(bytes(setup)))
    reply = train_content(plain, context)
    if (err := wire.content_error(reply)) is not None:
        raise getattr(errors, err[0], errors.FederaError)(err[1])  # surfaces as a failed reply
    update = wire.content_update(reply)
    delta = [(update.state[n].to(torch.float64) - state[n].to(torch.float64)).numpy() for n in names]
    peak = max(float(np.abs(d).max()) for d in delta)
    if peak > clip:
        # Flower would silently clip this coordinate: refuse instead of corrupting the sum.
        raise ConfigError(f"update delta reaches {peak:.3g} > flower.secagg_clip_range={clip}; raise it")
    return compat.fitres_to_recorddict(
        FitRes(Status(Code.OK, ""), ndarrays_to_parameters(delta), update.num_examples, dict(update.metrics)),
        keep_input=True,
    )

