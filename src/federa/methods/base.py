"""What every method provides; engines and clients see only this interface.

A method never knows about rounds or engines. The server calls :meth:`Method.server_setup`
once on the pretrained model and broadcasts its result; every party (server and clients)
then calls :meth:`Method.apply` with that same broadcast, so all hold identical frozen
weights. What trains is exactly what travels: :func:`trainable_state`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from federa.types import State

if TYPE_CHECKING:
    import torch
    from torch import nn
    from federa.config import Config
    from federa.settings import Section


class Method(ABC):
    name: ClassVar[str] = ""
    # The method's config section (``cfg.<name>``), or None when it has no settings of its own.
    settings: ClassVar[type[Section] | None] = None
    default_lr: ClassVar[float]  # AdamW rate when the config names none (``lr.<name>``)
    # True when the federated-LoRA variants (``+ffa``, ``+fedex``, ``+flora``, ...) apply: the method
    # trains peft LoRA pairs (``lora_A``/``lora_B``) from its first round. Subclasses inherit it, so a
    # new LoRA-family method (a subclass of :class:`~federa.methods.lora.Lora`) takes the variants as is.
    lora_variants: ClassVar[bool] = False

    def __init__(self, cfg: Config, peft_task_type: str = "SEQ_CLS") -> None:
        self.cfg = cfg
        self.peft_task_type = peft_task_type  # the task's head: SEQ_CLS or TOKEN_CLS (peft.TaskType)

    @classmethod
    def check(cls, cfg: Config) -> str | None:
        """Why this method cannot run under ``cfg`` (an engine, a schedule), or None."""
        return None

    # A multi-stage method (SLoRA: sparse warm-up, then LoRA) changes what trains at a stage
    # boundary; the server calls :meth:`next_stage` once there. One-stage methods keep these.

    def stage_of(self, rnd: int) -> int:
        """The stage in which round ``rnd`` trains (round 0 is the initial model, stage 0)."""
        return 0

    def stage_lr(self, stage: int, lr: float) -> float:
        """The learning rate of ``stage``, given the configured ``lr.<method>``."""
        return lr

    def next_stage(self, stage: int, model: nn.Module, state: State, setup: State) -> tuple[nn.Module, State, State]:
        """Server side, once: (model, initial global state, setup) of ``stage`` from the previous
        stage's model, final global state and setup. Clients get the new state as in any round."""
        raise NotImplementedError(f"method {self.name} has one stage")

    def stage_model(self, stage: int, base: nn.Module) -> nn.Module:
        """A client's model for ``stage`` (≥ 1), built from the pretrained ``base``: its structure and
        frozen weights, which must equal those of the server's model after :meth:`next_stage`; the
        trainables arrive with each round's state. A client on another machine builds it this way
        (Flower), so it needs neither the earlier stages' models nor their setup."""
        raise NotImplementedError(f"method {self.name} has one stage")

    def server_setup(self, model: nn.Module) -> State:
        """Computed once by the server from the pretrained model and broadcast to clients."""
        return {}

    @abstractmethod
    def apply(self, model: nn.Module, setup: State) -> nn.Module:
        """Turn the pretrained ``model`` into the trainable model, using the broadcast ``setup``."""

    @abstractmethod
    def save(self, model: nn.Module, out_dir: Path, setup: State) -> None:
        """Write the final model in a format the Hugging Face ecosystem loads."""


def trainable_state(model: nn.Module) -> State:
    """The tensors that train, hence the only ones that travel: detached copies, on the CPU whatever the
    model's device, since the global state is what the server aggregates, checkpoints and sends."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: State) -> None:
    """Copy ``state`` into the model's trainable parameters; names and shapes must match exactly."""
    import torch

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if params.keys() != state.keys():
        missing = sorted(params.keys() - state.keys())[:3]
        extra = sorted(state.keys() - params.keys())[:3]
        raise ValueError(f"trainable state mismatch: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])


def private_tensors(model: nn.Module, names: tuple[str, ...]) -> State:
    """Detached CPU copies of the parameters ``names`` (those a method variant keeps on each
    client, e.g. FedSA-LoRA's ``lora_B``); empty when there are none."""
    if not names:
        return {}
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if n in names}


def load_tensors(model: nn.Module, tensors: State) -> None:
    """Copy ``tensors`` into the model's parameters of those names, trainable or not (a client's
    private tensors); names must exist."""
    if not tensors:
        return
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t)


def state_bytes(state: State) -> int:
    """Bytes on the wire for ``state`` (raw tensor payload, no framing)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
