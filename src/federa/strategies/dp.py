"""Client-level differential privacy, DP-FedAvg style (McMahan et al., ICLR 2018), as a wrapper.

Each round: clip every client's delta (update − global) to L2 norm C, hand the inner (linear)
strategy the clipped updates with equal weights and *fixed* denominator m (the sampled
clients, padded with zero deltas for those that were rejected or silent, so one client's
influence is at most C/m whatever the others do), then add Gaussian noise N(0, (z·C/m)²) to
every coordinate of the mean. Noise is added even when nobody contributed, so the guarantee
never depends on who replied. ε comes from :mod:`federa.privacy`; everything is a pure
function of (config, round), so nothing needs checkpointing.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from federa.errors import ConfigError
from federa.privacy import calibrate_noise, epsilon_after
from federa.settings import Section
from federa.strategies.base import Strategy, Updates, Wrapper, derive_seed
from federa.strategies.robust import clip_delta, delta
from federa.types import State, Update

if TYPE_CHECKING:
    import torch
    from federa.config import Config

_NOISE_STREAM = 0xD9  # separates the noise seed from the sampling/client seeds of the same round


class DpSettings(Section):
    """``dp:`` client-level DP-FedAvg: clip deltas to clip_norm, add N(0, (z·C/m)²) to the mean."""

    enabled: bool = False
    clip_norm: float = Field(1.0, gt=0)
    noise_multiplier: float | None = Field(None, ge=0, description="z; None: chosen to meet target_epsilon.")
    target_epsilon: float | None = Field(None, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_noise_source(self) -> DpSettings:
        if self.enabled and (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("dp.enabled needs exactly one of dp.noise_multiplier or dp.target_epsilon; set one")
        return self


class DpNoise(Wrapper):
    """Clip, average with a fixed denominator through the inner strategy, add seeded noise; report ε."""

    section = "dp"
    settings = DpSettings
    needs_individual_updates = True  # each delta is clipped
    needs_linear = True  # the noise is calibrated to the sensitivity of a mean, not of a median
    covers_state_only = True  # only the state is clipped and noised: other tensors would leak

    def __init__(self, inner: Strategy, dp: DpSettings, num_clients: int, rounds: int) -> None:
        super().__init__(inner)
        self.dp = dp
        self.clip_norm = dp.clip_norm
        self.delta = dp.delta
        self.rounds = rounds
        self.sampling_probability = self.clients_per_round / num_clients

    @classmethod
    def wanted(cls, cfg: Config) -> bool:
        return cfg.dp.enabled

    @classmethod
    def wrap(cls, inner: Strategy, cfg: Config) -> DpNoise:
        return cls(inner, cfg.dp, cfg.num_clients, cfg.rounds)

    @cached_property
    def noise_multiplier(self) -> float:
        # Calibrated on first use: building a stack to check a config must stay cheap.
        if self.dp.noise_multiplier is not None:
            return self.dp.noise_multiplier
        if self.dp.target_epsilon is None:
            raise ConfigError("dp.enabled needs dp.noise_multiplier or dp.target_epsilon; set one of them")
        return calibrate_noise(self.dp.target_epsilon, self.rounds, self.sampling_probability, self.delta)

    @property
    def noise_std(self) -> float:
        """Per-coordinate std of the noise added to the averaged delta: z·C/m."""
        return self.noise_multiplier * self.clip_norm / self.clients_per_round

    def epsilon(self, rounds_done: int) -> float:
        return epsilon_after(rounds_done, self.sampling_probability, self.noise_multiplier, self.delta)

    def before(self, rnd: int, global_state: State, updates: Updates) -> Updates:
        """Clipped deltas as float64 states of weight 1, padded with zero deltas to m replies."""
        import torch

        g64 = {k: t.to("cpu", torch.float64) for k, t in global_state.items()}
        out: dict[int, Update] = {}
        for cid, u in updates.items():
            d = clip_delta(delta(u.state, global_state), self.clip_norm)
            out[cid] = Update({k: g64[k] + d[k] for k in g64}, 1, u.metrics)
        for pad in range(self.clients_per_round - len(out)):
            out[-1 - pad] = Update(g64, 1)  # a silent client: zero delta, still in the denominator
        return out

    def after(self, rnd: int, global_state: State, new_state: State) -> State:
        import torch

        # The noise depends only on (seed, round): a resumed or repeated run draws the same noise.
        g = torch.Generator().manual_seed(derive_seed(self.seed, rnd, _NOISE_STREAM))
        out: State = {}
        for k in sorted(global_state):
            ref = global_state[k]
            noise = torch.randn(ref.shape, generator=g, dtype=torch.float64) * self.noise_std
            out[k] = (new_state[k].to("cpu", torch.float64) + noise).to(ref.dtype)
        return {k: out[k] for k in global_state}

    def round_metrics(self, rnd: int) -> dict[str, Any]:
        return {**self.inner.round_metrics(rnd), "epsilon": self.epsilon(rnd),
                "dp_noise_multiplier": self.noise_multiplier}
