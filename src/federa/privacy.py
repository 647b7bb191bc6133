"""Privacy accounting for client-level DP-FedAvg (the mechanism: :mod:`federa.strategies.dp`).

Accounting is Google's dp-accounting RDP accountant, composing ``rounds`` Poisson-subsampled
Gaussian mechanisms with q = clients_per_round / num_clients. federa samples a fixed-size
uniform subset rather than a Poisson one; analysing it as Poisson with the same rate is the
usual practice (TensorFlow Federated, Opacus) and is stated as an assumption in the docs.
Everything here is a pure function of (config, round), so nothing needs checkpointing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from federa.errors import ConfigError

if TYPE_CHECKING:
    import dp_accounting


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
    import dp_accounting

    return dp_accounting.PoissonSampledDpEvent(sampling_probability, dp_accounting.GaussianDpEvent(noise_multiplier))


def epsilon_after(rounds: int, sampling_probability: float, noise_multiplier: float, delta_: float) -> float:
    """(ε at δ) after ``rounds`` rounds, from dp-accounting's RDP accountant; inf without noise."""
    import dp_accounting

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
    import dp_accounting

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
