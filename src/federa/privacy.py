"""Client-level differential privacy, DP-FedAvg style (McMahan et al., ICLR 2018).

Each round: clip every client's delta (update − global) to L2 norm C, sum, divide by the
*fixed* number of sampled clients m (not by how many replied, so one client's influence is
at most C/m whatever the others do), and add Gaussian noise N(0, (z·C/m)²) to every
coordinate. A rejected or silent client contributes a zero delta, and noise is added even
when nobody contributed, so the guarantee never depends on who replied.

Accounting is Google's dp-accounting RDP accountant, composing ``rounds`` Poisson-subsampled
Gaussian mechanisms with q = clients_per_round / num_clients. federa samples a fixed-size
uniform subset rather than a Poisson one; analysing it as Poisson with the same rate is the
usual practice (TensorFlow Federated, Opacus) and is stated as an assumption in the docs.
Everything here is a pure function of (config, round), so nothing needs checkpointing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dp_accounting
import torch

from federa.config import Config, DpConfig
from federa.errors import ConfigError
from federa.methods.base import State
from federa.strategies.base import derive_seed
from federa.strategies.clipping import clip_delta, delta

_NOISE_STREAM = 0xD9  # separates the noise seed from the sampling/client seeds of the same round


@contextmanager
def _quiet_absl() -> Iterator[None]:
    # The accountant logs one warning per fractional RDP order it drops (harmless: that order
    # is excluded from the minimum); hundreds of them would bury federa's own output.
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _round_event(sampling_probability: float, noise_multiplier: float) -> dp_accounting.DpEvent:
    return dp_accounting.PoissonSampledDpEvent(sampling_probability, dp_accounting.GaussianDpEvent(noise_multiplier))


def epsilon_after(rounds: int, sampling_probability: float, noise_multiplier: float, delta_: float) -> float:
    """(ε at δ) after ``rounds`` rounds, from dp-accounting's RDP accountant; inf without noise."""
    if rounds <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    with _quiet_absl():
        accountant = dp_accounting.rdp.RdpAccountant()
        accountant.compose(_round_event(sampling_probability, noise_multiplier), rounds)
        return float(accountant.get_epsilon(delta_))


def calibrate_noise(target_epsilon: float, rounds: int, sampling_probability: float, delta_: float) -> float:
    """The smallest noise multiplier z (to 1e-4) whose ε after ``rounds`` rounds is ≤ ``target_epsilon``."""
    try:
        with _quiet_absl():
            z = dp_accounting.calibrate_dp_mechanism(
                dp_accounting.rdp.RdpAccountant,
                lambda z: dp_accounting.SelfComposedDpEvent(_round_event(sampling_probability, z), rounds),
                target_epsilon, delta_,
                bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-3, 1.0), tol=1e-5,
            )
    except (ValueError, dp_accounting.mechanism_calibration.NoBracketIntervalFoundError):
        raise ConfigError(
            f"dp.target_epsilon={target_epsilon:g} cannot be met in {rounds} rounds at delta={delta_:g}; "
            "raise dp.target_epsilon or set dp.noise_multiplier"
        ) from None
    # Brent's root is within tol of the exact z on either side: step up until ε ≤ target holds.
    z = math.ceil(z * 1e4) / 1e4
    while epsilon_after(rounds, sampling_probability, z, delta_) > target_epsilon:
        z += 1e-4
    return z


class DpFedAvg:
    """Clip, average with a fixed denominator, add seeded Gaussian noise; report ε."""

    def __init__(self, dp: DpConfig, clients_per_round: int, num_clients: int, rounds: int, seed: int) -> None:
        self.clip_norm = dp.clip_norm
        self.delta = dp.delta
        self.clients_per_round = clients_per_round
        self.sampling_probability = clients_per_round / num_clients
        self.seed = seed
        if dp.noise_multiplier is not None:
            self.noise_multiplier = dp.noise_multiplier
        elif dp.target_epsilon is not None:
            self.noise_multiplier = calibrate_noise(dp.target_epsilon, rounds, self.sampling_probability, dp.delta)
        else:
            raise ConfigError("dp.enabled needs dp.noise_multiplier or dp.target_epsilon; set one of them")

    @classmethod
    def from_config(cls, cfg: Config) -> DpFedAvg:
        return cls(cfg.dp, cfg.clients_per_round, cfg.num_clients, cfg.rounds, cfg.seed)

    @property
    def noise_std(self) -> float:
        """Per-coordinate std of the noise added to the averaged delta: z·C/m."""
        return self.noise_multiplier * self.clip_norm / self.clients_per_round

    def epsilon(self, rounds_done: int) -> float:
        return epsilon_after(rounds_done, self.sampling_probability, self.noise_multiplier, self.delta)

    def aggregate(self, rnd: int, global_state: State, client_states: Sequence[State]) -> State:
        """global + (Σ clip(Δᵢ))/m + N(0, (z·C/m)²), cast back to each tensor's dtype."""
        m = self.clients_per_round
        total = {k: torch.zeros(t.shape, dtype=torch.float64) for k, t in global_state.items()}
        for s in client_states:
            for k, d in clip_delta(delta(s, global_state), self.clip_norm).items():
                total[k] += d
        # The noise depends only on (seed, round): a resumed or repeated run draws the same noise.
        g = torch.Generator().manual_seed(derive_seed(self.seed, rnd, _NOISE_STREAM))
        out: State = {}
        for k in sorted(global_state):
            ref = global_state[k]
            noise = torch.randn(ref.shape, generator=g, dtype=torch.float64) * self.noise_std
            out[k] = (ref.to("cpu", torch.float64) + total[k] / m + noise).to(ref.dtype)
        return {k: out[k] for k in global_state}
