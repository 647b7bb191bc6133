"""FRLoRA (Yan et al., ICLR 2025): fold each round's averaged LoRA product into the weights, restart the adapter.

Round t: every client starts from the same adapter (B0, A0), the factors the method built at
setup (FeDeRA: the top-r singular vectors of each pretrained W, scaled; LoRA: A0 random, B0 = 0),
trains, and sends B_k, A_k. The server averages the factors (FedAvg weights p_k), adds the
round's update s·(B̄·Ā − B0·A0) to the frozen weights of every party, and sends the adapter back
to (B0, A0) for the next round; the head is averaged and kept. The global model is therefore
W_res + Σ_t s·(B̄_t·Ā_t − B0·A0) + s·B0·A0: a sum of rank-r updates, whose rank can grow past r
over the rounds, while each round's local problem stays a rank-r LoRA around the principal
subspace. This is the authors' loop in ``label_skew_ours.py`` (IAMJackYan/FRLoRA): after
``global_aggregate`` it adds ``delta_w = B̄Ā·scale − B0A0·scale`` (``init_base``) to each base
weight and resets ``lora_A``/``lora_B`` to ``init_base``; the principal-component start is
``fed_global.ours_init``, the PiSSA/FeDeRA initialisation. The authors average with equal weights
(``sample_num_list`` is all ones); federa uses FedAvg's example weights, as for every rule.

How it differs from FeDeRA (``federa``): FeDeRA starts from the same SVD factors once and then
keeps training them round after round (the global update stays one rank-r adapter, B·A − B0·A0);
FRLoRA folds each round's product into W and restarts from the principal factors every round.
From FLoRA (``+flora``): FLoRA folds the exact Σ p_k·B_k·A_k (stacked factors), FRLoRA the
product of the averages, so FRLoRA's fold carries the usual aggregation error (``lora_agg_error``).

What travels: the factors both ways as in LoRA, and the cumulative fold (out×in per adapted
module, float32) to every sampled client through the engines' ``base_fold`` channel, counted in
``bytes_down``, as for FedEx-LoRA and FLoRA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from federa.strategies.base import Strategy, Updates
from federa.strategies.fedavg import weighted_average
from federa.strategies.fedex import FoldsIntoBase
from federa.methods.lora_math import lora_pairs, lora_rank, weighted_mean
from federa.types import State

if TYPE_CHECKING:
    from federa.config import Config


class FRLoRA(FoldsIntoBase, Strategy):
    name = "frlora"

    def __init__(self, clients_per_round: int, seed: int, scaling: float = 2.0) -> None:
        super().__init__(clients_per_round, seed)
        self.scaling = scaling
        self.fold: State = {}  # cumulative Σ_t s·(B̄_t·Ā_t − B0·A0) per adapted matrix, float64

    @classmethod
    def from_config(cls, cfg: Config) -> FRLoRA:
        return cls(cfg.clients_per_round, cfg.seed, scaling=cfg.lora.alpha / cfg.lora.r)

    @classmethod
    def check(cls, cfg: Config) -> str | None:
        if cfg.strategy == cls.name:
            return "strategy=frlora is FRLoRA's rule and needs its variant; select methods=federa+frlora or lora+frlora"
        if cfg.server_opt.name != "none":
            # The adapter returns to its start every round, so new − old adapter is 0: nothing to step along.
            return "FRLoRA (…+frlora) restarts the adapter every round, so server_opt cannot step along it; " \
                   "set server_opt.name=none"
        return None

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        import torch

        states = [u.state for u in updates.values()]
        weights = [u.num_examples for u in updates.values()]
        for module, (a_key, b_key) in lora_pairs(global_state).items():
            b_mean = weighted_mean([s[b_key] for s in states], weights)
            a_mean = weighted_mean([s[a_key] for s in states], weights)
            start = global_state[b_key].to(torch.float64) @ global_state[a_key].to(torch.float64)
            self.add_fold(module, self.scaling * (b_mean @ a_mean - start))
        rest = [{k: v for k, v in s.items() if lora_rank(k, v.shape) is None} for s in states]
        # The adapter restarts where every round starts (the built factors); the head is averaged.
        return {**global_state, **(weighted_average(rest, weights) if rest[0] else {})}
