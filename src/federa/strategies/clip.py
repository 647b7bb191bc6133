"""Delta clipping (``robust.clip_delta_norm``): each reply moved back towards the global state so
that its delta has L2 norm at most the bound, before the inner strategy sees it. It bounds what
one client can do to any strategy without rejecting anyone."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from federa.strategies.base import Strategy, Updates, Wrapper
from federa.strategies.robust import RobustSettings, clip_update
from federa.types import State

if TYPE_CHECKING:
    from federa.config import Config


class ClipDeltas(Wrapper):
    section = "robust"
    settings = RobustSettings
    needs_individual_updates = True

    def __init__(self, inner: Strategy, max_norm: float) -> None:
        super().__init__(inner)
        self.max_norm = max_norm

    @classmethod
    def wanted(cls, cfg: Config) -> bool:
        return cfg.robust.clip_delta_norm is not None

    @classmethod
    def wrap(cls, inner: Strategy, cfg: Config) -> ClipDeltas:
        return cls(inner, cfg.robust.clip_delta_norm)

    def before(self, rnd: int, global_state: State, updates: Updates) -> Updates:
        start = self.client_hook.client_state  # what each client started from (its rank's factors, if its own)
        return {c: replace(u, state=clip_update(u.state, start(rnd, c, global_state), self.max_norm))
                for c, u in updates.items()}
