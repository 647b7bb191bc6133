"""RoLoRA (Chen et al., 2024): alternate which LoRA factor trains, round by round.

Odd rounds train B with A held fixed, even rounds train A with B held fixed (B first: with
LoRA's B = 0 start, A's gradient is zero until B moves). With one factor fixed on every
client, the average of the products is the product of the averages, so the round's
aggregate is exact. Aggregation itself is FedAvg; the fixed factor comes back unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from federa.strategies.fedavg import FedAvg
from federa.types import TrainSettings


class RoLoRA(FedAvg):
    name = "rolora"

    def configure_round(self, rnd: int, clients: Sequence[int], base: TrainSettings) -> dict[int, TrainSettings]:
        fixed = "lora_A" if rnd % 2 == 1 else "lora_B"
        return {c: replace(s, frozen=fixed) for c, s in super().configure_round(rnd, clients, base).items()}
