"""Server optimisers (FedOpt, Reddi et al., ICLR 2021), applied to the aggregated delta of any strategy.

The inner strategy's result x̄ gives the pseudo-gradient Δ = x̄ − x (the round's mean update);
the server then steps x ← x + η·(direction), keeping its moments across rounds (checkpointed):

- ``sgd``:  with ``momentum`` β, m ← β·m + Δ and x ← x + η·m (FedAvgM, Hsu et al. 2019;
  β = 0, η = 1 is FedAvg itself);
- ``adam``: m ← β₁·m + (1−β₁)·Δ, v ← β₂·v + (1−β₂)·Δ², x ← x + η·m / (√v + τ);
- ``yogi``: as adam with v ← v − (1−β₂)·Δ²·sign(v − Δ²);
- ``adagrad``: v ← v + Δ², x ← x + η·m / (√v + τ) with m as in adam.

As in the paper's Algorithm 2, there is no bias correction and v starts at τ². A round in
which no reply was accepted keeps the global state and the moments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from federa.settings import Section
from federa.strategies.base import Strategy, Wrapper
from federa.types import State

if TYPE_CHECKING:
    import torch
    from federa.config import Config

# Server learning rates when server_opt.lr is not set: sgd moves by the mean delta itself;
# the adaptive rules normalise the step per coordinate, so η is the step size (Reddi et al. tune
# η in 10^-2…10^0 and settle near 10^-2…10^-1 for adam/yogi).
DEFAULT_LR = {"sgd": 1.0, "adam": 1e-2, "yogi": 1e-2, "adagrad": 1e-1}


class ServerOptSettings(Section):
    """``server_opt:`` the optimiser applied to each round's aggregated delta."""

    name: Literal["none", "sgd", "adam", "yogi", "adagrad"] = "none"
    lr: float | None = Field(None, gt=0, description="Server learning rate η; None: 1 for sgd, 1e-2 adam/yogi, 1e-1 adagrad.")
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd: server momentum β (FedAvgM).")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0, description="Adaptivity ε of adam/yogi/adagrad.")


class ServerOptimizer(Wrapper):
    section = "server_opt"
    settings = ServerOptSettings

    def __init__(self, inner: Strategy, opt: ServerOptSettings) -> None:
        super().__init__(inner)
        self.opt = opt
        self.lr = opt.lr if opt.lr is not None else DEFAULT_LR[opt.name]
        self.m: State = {}
        self.v: State = {}

    @classmethod
    def wanted(cls, cfg: Config) -> bool:
        return cfg.server_opt.name != "none"

    @classmethod
    def wrap(cls, inner: Strategy, cfg: Config) -> ServerOptimizer:
        return cls(inner, cfg.server_opt)

    def after(self, rnd: int, global_state: State, new_state: State) -> State:
        import torch

        if new_state is global_state:  # nothing was aggregated this round
            return global_state
        o, out = self.opt, {}
        for k, ref in global_state.items():
            x = ref.to("cpu", torch.float64)
            d = new_state[k].to("cpu", torch.float64) - x
            if o.name == "sgd":
                m = o.momentum * self.m[k] + d if k in self.m else d
                step = m
            else:
                m = o.beta1 * self.m.get(k, torch.zeros_like(d)) + (1 - o.beta1) * d
                v = self.v.get(k, torch.full_like(d, o.tau ** 2))
                d2 = d * d
                if o.name == "adam":
                    v = o.beta2 * v + (1 - o.beta2) * d2
                elif o.name == "yogi":
                    v = v - (1 - o.beta2) * d2 * torch.sign(v - d2)
                else:  # adagrad
                    v = v + d2
                self.v[k] = v
                step = m / (v.sqrt() + o.tau)
            self.m[k] = m
            out[k] = (x + self.lr * step).to(ref.dtype)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "m": self.m, "v": self.v}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.m, self.v = dict(state.get("m", {})), dict(state.get("v", {}))
