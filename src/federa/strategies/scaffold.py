"""SCAFFOLD (Karimireddy et al., ICML 2020), option II control variates.

The server keeps a control variate c and each client i its own cᵢ (zeros at the start, one
tensor per trainable tensor). In a round, client i starts from the global x and after every
local step moves its parameters by −η·(c − cᵢ), correcting its drift towards its own optimum;
after K steps it sets cᵢ⁺ = cᵢ − c + (x − yᵢ)/(K·η) and replies with yᵢ and Δcᵢ = cᵢ⁺ − cᵢ.
The server sets x ← x + η_g·mean(yᵢ − x) and c ← c + (|S|/N)·mean(Δcᵢ), |S| the accepted
replies and N all clients, so that c stays the mean of all cᵢ.

federa trains locally with AdamW, not SGD, so the correction is applied to the *step*
(after the optimiser) instead of being added to the gradient before it: with plain SGD the
two are the same, and with AdamW it keeps c in the units of (x − y)/(K·η), the mean local
direction, instead of adding direction-sized corrections to raw gradients.

What travels: c down beside x, Δcᵢ up beside yᵢ (twice FedAvg's bytes each way). Where cᵢ
lives: on Flower, in the node's state; in-process, the strategy keeps every simulated
client's cᵢ for it, keyed by client id, and checkpoints it with c.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from federa.settings import Section
from federa.strategies.base import Strategy, Updates
from federa.strategies.capabilities import ClientHook
from federa.types import LocalRule, State, TrainSettings

if TYPE_CHECKING:
    import torch
    from federa.config import Config


def _f64(t: torch.Tensor) -> torch.Tensor:
    import torch

    return t.detach().to("cpu", torch.float64)


class ScaffoldSettings(Section):
    """``scaffold:`` the server's step on the mean update."""

    server_lr: float = Field(1.0, gt=0, description="η_g of x ← x + η_g·mean(yᵢ − x); 1 moves to the mean.")


class ScaffoldClient(LocalRule):
    """Client i's side: correct each step by −η·(c − cᵢ); afterwards update cᵢ (option II)."""

    def __init__(self, global_state: State, payload: State, memory: State, settings: TrainSettings) -> None:
        import torch

        super().__init__(global_state, payload, memory, settings)
        self.c = {k: _f64(payload[k]) for k in global_state}
        # A client's first round: cᵢ = 0.
        self.c_i = {k: _f64(memory[k]) if k in memory else torch.zeros(t.shape, dtype=torch.float64)
                    for k, t in global_state.items()}
        self._correction: dict[str, torch.Tensor] = {}

    def after_step(self, params: Mapping[str, torch.nn.Parameter]) -> None:
        import torch

        if not self._correction:  # built once, on the parameters' device and dtype
            self._correction = {k: (self.settings.lr * (self.c[k] - self.c_i[k])).to(p.device, p.dtype)
                                for k, p in params.items()}
        with torch.no_grad():
            for k, p in params.items():
                p.sub_(self._correction[k])

    def finish(self, new_state: State, steps: int) -> tuple[State, State]:
        scale = 1.0 / (steps * self.settings.lr)
        extra, memory = {}, {}
        for k, x in self.global_state.items():
            c_new = self.c_i[k] - self.c[k] + (_f64(x) - _f64(new_state[k])) * scale
            extra[k] = (c_new - self.c_i[k]).to(x.dtype)
            memory[k] = c_new.to(x.dtype)
        return extra, memory


class Scaffold(Strategy, ClientHook):
    name = "scaffold"
    settings = ScaffoldSettings
    client_rule = ScaffoldClient

    def __init__(self, clients_per_round: int, seed: int, num_clients: int, server_lr: float = 1.0) -> None:
        super().__init__(clients_per_round, seed)
        self.num_clients = num_clients
        self.server_lr = server_lr
        self.c: State = {}  # the server's control variate, created at the first round
        self.c_clients: dict[int, State] = {}  # cᵢ of simulated clients (in-process engine only)

    @classmethod
    def from_config(cls, cfg: Config) -> Scaffold:
        return cls(cfg.clients_per_round, cfg.seed, num_clients=cfg.num_clients, server_lr=cfg.scaffold.server_lr)

    def _control(self, global_state: State) -> State:
        import torch

        if not self.c:
            self.c = {k: torch.zeros(t.shape, dtype=t.dtype) for k, t in global_state.items()}
        return self.c

    def client_payload(self, rnd: int, client: int, global_state: State) -> State:
        return self._control(global_state)

    def expected_extra(self, global_state: State) -> State:
        return self._control(global_state)  # Δcᵢ has c's names, shapes and dtypes

    def client_memory(self, client: int) -> State:
        return self.c_clients.get(client, {})

    def keep_client_memory(self, client: int, memory: State) -> None:
        self.c_clients[client] = memory

    def aggregate(self, rnd: int, global_state: State, updates: Updates) -> State:
        c = self._control(global_state)
        n = len(updates)
        new_state, new_c = {}, {}
        for k, x in global_state.items():
            x64 = _f64(x)
            mean_dy = sum(_f64(u.state[k]) - x64 for u in updates.values()) / n
            new_state[k] = (x64 + self.server_lr * mean_dy).to(x.dtype)
            # (|S|/N)·mean(Δcᵢ) = Σ Δcᵢ / N: c stays the mean of every client's cᵢ.
            new_c[k] = (_f64(c[k]) + sum(_f64(u.extra[k]) for u in updates.values()) / self.num_clients).to(c[k].dtype)
        self.c = new_c
        return new_state

    def state_dict(self) -> dict[str, Any]:
        return {"c": self.c, "c_clients": self.c_clients}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.c = dict(state.get("c", {}))
        self.c_clients = {int(cid): dict(s) for cid, s in state.get("c_clients", {}).items()}
