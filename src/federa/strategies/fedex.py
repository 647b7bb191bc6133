"""FedEx-LoRA (Singhal et al., 2024): exact aggregation of LoRA updates.

Averaging A and B separately gives avg(B)·avg(A), not the average update avg(B·A). FedEx keeps
the factor averages as the new adapter and folds the difference into every party's frozen
weight: W ← W + s·(avg(B·A) − avg(B)·avg(A)) per adapted matrix (s = lora.alpha / lora.r), so
the global model equals the average of the clients' models exactly. The cumulative fold is
checkpointed, applied by the server to its model, and sent to each sampled client beside the
state (the engine ships ``base_fold`` generically; a full out×in matrix per adapted module,
counted in ``bytes_down``): exactness costs FFT-sized traffic on the adapted matrices. Averages are FedAvg's (by example count).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from federa.strategies.base import Strategy, Updates
from federa.strategies.capabilities import FrozenWeights
from federa.strategies.fedavg import weighted_average
from federa.methods.lora_math import lora_pairs, weighted_mean
from federa.types import State

if TYPE_CHECKING:
    from torch import nn

    from federa.config import Config

BASE_SUFFIX = ".base_layer.weight"  # peft keeps the frozen matrix of an adapted module here


class FoldsIntoBase(FrozenWeights):
    """The part of a strategy that moves frozen weights (FedEx-LoRA's residual, FLoRA's stacked
    update): the cumulative fold per frozen weight, in float64, which the engines apply and ship
    as :meth:`base_fold` and which checkpoints keep."""

    fold: State  # frozen weight name → cumulative change

    def add_fold(self, module: str, change: Any) -> None:
        name = module + BASE_SUFFIX
        self.fold[name] = self.fold[name] + change if name in self.fold else change

    def base_fold(self) -> State:
        return {k: v.float() for k, v in self.fold.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"fold": self.fold}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fold = dict(state.get("fold", {}))


class FedExLoRA(FoldsIntoBase, Strategy):
    name = "fedex"

    def __init__(self, clients_per_round: int, seed: int, scaling: float = 2.0) -> None:
        super().__init__(clients_per_round, seed)
        self.scaling = scaling
        self.fold = {}  # cumulative s·(avg(BA) − avg(B)avg(A)) per adapted matrix

    @classmethod
    def from_config(cls, cfg: Config) -> FedExLoRA:
        return cls(cfg.clients_per_round, cfg.seed, scaling=cfg.lora.alpha / cfg.lora.r)

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        states = [u.state for u in updates.values()]
        weights = [u.num_examples for u in updates.values()]
        for module, (a_key, b_key) in lora_pairs(global_state).items():
            mean_product = weighted_mean([s[b_key].double() @ s[a_key].double() for s in states], weights)
            product_of_means = weighted_mean([s[b_key] for s in states], weights) @ weighted_mean(
                [s[a_key] for s in states], weights)
            self.add_fold(module, self.scaling * (mean_product - product_of_means))
        return weighted_average(states, weights)


def apply_base_fold(model: nn.Module, fold: State, originals: State) -> State:
    """Set every frozen weight named in ``fold`` to its unfolded value + the fold (transposed for
    GPT-2's Conv1D, which stores (in, out)); a weight folded earlier but absent from ``fold`` goes
    back to its unfolded value. ``originals``: the unfolded weights this returned last time ({}
    on a model never folded). A strategy's ``base_fold`` (FedEx-LoRA) is the only source of such
    changes to frozen weights.

    Always original + fold, never += the change: every party (the server, a resumed server, a
    Flower node that missed rounds, someone loading the exported fold) then holds bit-identical
    frozen weights, which incremental float32 additions would not give.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    params = dict(model.named_parameters())
    originals = dict(originals)
    with torch.no_grad():
        for name in [*fold, *(n for n in originals if n not in fold)]:
            p = params[name]
            if name not in originals:
                originals[name] = p.detach().clone()
            if name not in fold:
                p.copy_(originals[name])
                continue
            owner = model.get_submodule(name.removesuffix(".weight"))
            total = fold[name]
            p.copy_(originals[name] + (total.T if isinstance(owner, Conv1D) else total).to(p.device, p.dtype))
    return {k: v for k, v in originals.items() if k in fold}
