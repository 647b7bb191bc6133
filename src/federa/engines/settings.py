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
                            "own rows. 1: one at a time. auto: on a GPU, up to 10 of a round's sampled clients "
                            "at once for lora and federa (and their +variants/@aggregators); on the CPU, and for "
                            "other methods, one at a time. Same updates as one at a time, to float rounding; "
                            "see docs/batched_clients.md.")

    @field_validator("batch_clients", mode="before")
    @classmethod
    def _positive_or_auto(cls, v: Any) -> Any:
        if v == "auto":
            return v
        try:
            k = int(v)
        except (TypeError, ValueError, OverflowError):  # OverflowError: inf
            k = 0
        if isinstance(v, bool) or k < 1 or (isinstance(v, float) and v != k):
            raise ValueError(f"inprocess.batch_clients must be a positive integer or auto, got {v!r}; "
                             "try inprocess.batch_clients=auto")
        return k

    def clients_at_once(self, method: str, sampled: int, device: str = "cpu") -> int:
        """How many of ``sampled`` clients of ``method`` train together on ``device`` (1: one at a time)."""
        from federa.methods.variants import split_method

        if self.batch_clients == "auto":
            # Measured (benchmarks/throughput.py --batched): LoRA factors gain where Python and kernel
            # launches dominate (1.2-2.4x on a tiny model, the regime of a GPU with small batches) but
            # not reliably where matmuls do (MiniLM on 2 shared CPU cores: 0.7-1.75x, run to run), and
            # one-at-a-time clients there stay bit-identical to Flower's. From 10 to 30 clients the gain
            # flattens while activations grow with K. Methods with tensors in every layer (bitfit, ia3,
            # adapters) pay a vmap per layer.
            lora_like = split_method(method)[0] in ("lora", "federa")
            return min(sampled, AUTO_MAX) if lora_like and str(device).startswith("cuda") else 1
        return min(self.batch_clients, sampled)
