"""The few types every part of federa exchanges: a state of tensors, a client's orders and its reply.

They live here, apart from the modules that produce or consume them, so that methods,
clients, strategies and engines can share them without importing one another.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only for annotations: validating a config must not import it
    import torch

State = dict[str, "torch.Tensor"]  # parameter name → tensor: what trains, hence what travels


@dataclass(frozen=True)
class TrainSettings:
    """What a strategy tells one client to do this round."""

    lr: float
    batch_size: int
    seed: int
    local_steps: int | None = None
    local_epochs: float | None = None
    max_grad_norm: float | None = 1.0
    weight_decay: float = 0.0
    # FedProx: (prox_mu/2)·‖w − w_global‖² joins the local loss; 0 leaves training untouched.
    prox_mu: float = 0.0
    # Mixed precision of forward/backward (weights and optimiser stay float32): fp32, bf16, fp16.
    precision: str = "fp32"
    # Comma-separated parameter-name fragments held fixed this round (RoLoRA: "lora_A" or "lora_B");
    # a string, not a tuple, so it crosses Flower's ConfigRecord as it is.
    frozen: str = ""

    def num_steps(self, num_examples: int) -> int:
        if self.local_epochs is not None:
            return max(1, math.ceil(self.local_epochs * num_examples / self.batch_size))
        assert self.local_steps is not None
        return self.local_steps


@dataclass
class Update:
    """A client's reply: its new trainable state, the example count that weights it, metrics.

    ``extra``: tensors a strategy's client rule sends up beside the state (SCAFFOLD's Δcᵢ);
    they travel and are counted in ``bytes_up``. ``memory``: what the client keeps for its next
    round (SCAFFOLD's cᵢ); it never travels, the engine stores it on the client's behalf.
    """

    state: State
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    extra: State = field(default_factory=dict)
    memory: State = field(default_factory=dict)


class LocalRule:
    """A strategy's part of one client's local training, for rules that change it (SCAFFOLD).

    Built for one client and one round from the global state it starts from, the ``payload``
    the server sent it beside that state (counted in ``bytes_down``), and the ``memory`` it kept
    from its previous round (empty on its first). The base class changes nothing.
    """

    def __init__(self, global_state: State, payload: State, memory: State, settings: TrainSettings) -> None:
        self.global_state, self.payload, self.memory, self.settings = global_state, payload, memory, settings

    def private(self) -> State:
        """Tensors this client trains beside the broadcast state but keeps to itself (FedSA-LoRA's
        B and head): loaded into its model before training, never sent; their trained values reach
        :meth:`finish` inside ``new_state``. Empty for most rules."""
        return {}

    def after_step(self, params: Mapping[str, torch.nn.Parameter]) -> None:
        """Called after every optimiser step with the trainable parameters (name → parameter)."""

    def finish(self, new_state: State, steps: int) -> tuple[State, State]:
        """(extra tensors to send up, memory to keep) once the ``steps`` local steps are done."""
        return {}, {}
