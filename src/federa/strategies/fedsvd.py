"""FedSVD (Lee et al., NeurIPS 2025): clients train B only; the server re-orthonormalises A by SVD.

As in FFA-LoRA, A is shared and frozen on every client, so B is all that trains and travels up,
and the average is exact: avg(B)·A = avg(B·A). After each round the server refactors the new
product: SVD(B̄·A) = U·S·Vᵀ, then A ← V_rᵀ and B ← U_r·S_r (r = lora.r), the same product (B̄·A
has rank ≤ r) in a basis whose A rows are orthonormal and follow the directions the clients
actually moved, rather than staying at the initial random (or SVD) A. This is the authors'
``misc/utils.reinit_lora`` (seanie12/fed-svd), run by ``fedmm/fedavg/server.py`` after every
round (``--recalculate-svd-period 1``, no warm-up, in both their DP and non-DP scripts).

It is aimed at differential privacy: only B carries client data, and the SVD is post-processing
of the aggregate. Under ``dp.enabled`` federa's DP-FedAvg clips the B deltas and noises their
mean inside the wrapper stack; the SVD runs afterwards (:meth:`reparametrise`, on the noised B),
so it costs no privacy. (The authors use per-example DP-SGD on the clients instead; the
server-side step is the same.)

What travels down besides B: the new A, r×in per adapted module each round, as the change from
the A every party built at setup (the engines' ``base_fold`` channel, counted in ``bytes_down``,
float32; the server's own A is the built A + that change in float32, bit for bit what each
client holds). What travels up: B (and the head), nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from federa.strategies.capabilities import FrozenWeights
from federa.strategies.fedavg import FedAvg
from federa.methods.lora_math import A_KEY, B_KEY
from federa.types import State

if TYPE_CHECKING:
    import torch

    from federa.config import Config


def refactor(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B', A') = (U_r·S_r, V_rᵀ) of the SVD of B·A, in float64: B'·A' = B·A (rank ≤ r) and the
    rows of A' are orthonormal."""
    import torch

    u, s, vh = torch.linalg.svd(b.to(torch.float64) @ a.to(torch.float64), full_matrices=False)
    r = a.shape[0]
    return (u[:, :r] * s[:r]).contiguous(), vh[:r].contiguous()


class FedSVD(FedAvg, FrozenWeights):
    name = "fedsvd"
    reads_frozen = (A_KEY,)

    def __init__(self, clients_per_round: int, seed: int) -> None:
        super().__init__(clients_per_round, seed)
        self.initial_a: State = {}  # A as every party builds it (LoRA's seeded draw, FeDeRA's SVD factor)
        self.a_change: State = {}  # A name → current A − initial A, float32 (what clients add)

    @classmethod
    def check(cls, cfg: Config) -> str | None:
        if cfg.strategy == cls.name:
            return "strategy=fedsvd is FedSVD's rule and needs its variant; select methods=lora+fedsvd or federa+fedsvd"
        if cfg.server_opt.name != "none":
            # Each round rewrites B in a new basis, so new − old B is no direction an optimiser's moments could follow.
            return "FedSVD (…+fedsvd) refactors B every round, so server_opt cannot step along it; set server_opt.name=none"
        return super().check(cfg)

    def start_frozen(self, frozen: State) -> None:
        self.initial_a = {k: v.clone() for k, v in frozen.items()}

    def current_a(self, name: str) -> torch.Tensor:
        """A as every party holds it now: the built A plus the shipped change, added in float32 as
        :func:`federa.methods.base.apply_base_fold` adds it."""
        a0 = self.initial_a[name]
        return a0 + self.a_change[name].to(a0.dtype) if name in self.a_change else a0

    def reparametrise(self, rnd: int, state: State) -> State:
        new = dict(state)
        for b_key in [k for k in state if B_KEY in k]:
            a_key = b_key.replace(B_KEY, A_KEY)
            if a_key not in self.initial_a:
                continue
            b, a = refactor(state[b_key], self.current_a(a_key))
            new[b_key] = b.to(state[b_key].dtype)
            a0 = self.initial_a[a_key]
            self.a_change[a_key] = (a - a0.to(a.dtype)).to(a0.dtype)
        return new

    def base_fold(self) -> State:
        return dict(self.a_change)

    def state_dict(self) -> dict[str, Any]:
        return {"a_change": self.a_change}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.a_change = dict(state.get("a_change", {}))
