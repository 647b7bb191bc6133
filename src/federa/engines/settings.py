"""``inprocess:`` how the in-process engine runs a round's clients (engine=inprocess)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from federa.settings import Section


AUTO_MAX = 10  # batch_clients=auto trains at most this many clients at once


class InprocessSettings(Section):
    """engine=inprocess: how many processes train a round's sampled clients, and how many at once."""

    workers: int = Field(
        1, ge=1, description="Worker processes that train a round's clients side by side; each gets "
                             "model.num_threads // workers torch threads. 1: one after another, in this process.")
    batch_clients: int | Literal["auto"] = Field(
        "auto", description="Clients trained together in one forward/backward per step (federa.client_batch): "
                            "the frozen model once over their stacked batches, each client's own tensors on its "
                            "own rows. 1: one at a time. auto: up to 10 of a round's sampled clients at once for "
                            "lora and federa (and their +variants/@aggregators), one at a time for other methods. "
                            "Same updates as one at a time, to float rounding (CPU); see docs/batched_clients.md.")

    @field_validator("batch_clients", mode="before")
    @classmethod
    def _positive_or_auto(cls, v: Any) -> Any:
        if v == "auto":
            return v
        try:
            k = int(v)
        except (TypeError, ValueError):
            k = 0
        if isinstance(v, bool) or k < 1 or (isinstance(v, float) and v != k):
            raise ValueError(f"inprocess.batch_clients must be a positive integer or auto, got {v!r}; "
                             "try inprocess.batch_clients=auto")
        return k

    def clients_at_once(self, method: str, sampled: int) -> int:
        """How many of ``sampled`` clients of ``method`` train together (1: one at a time)."""
        from federa.methods.variants import split_method

        if self.batch_clients == "auto":
            # Measured (benchmarks/throughput.py --batched): LoRA factors gain where Python and kernel
            # launches dominate (1.4-2.4x on a tiny model) and lose nothing where matmuls do (MiniLM on
            # 2 CPU cores, 1.00-1.05x); from 10 to 30 clients the gain flattens while activations grow
            # with K. Methods with tensors in every layer (bitfit, ia3, adapters) pay a vmap per layer.
            return min(sampled, AUTO_MAX) if split_method(method)[0] in ("lora", "federa") else 1
        return min(self.batch_clients, sampled)
