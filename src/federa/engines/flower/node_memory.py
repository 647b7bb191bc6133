"""A client's memory on its own node (SCAFFOLD's cᵢ): what ``Update.memory`` becomes on Flower.

In-process, the strategy keeps every simulated client's memory and checkpoints it. On Flower the
memory never leaves the node: it is kept in the node's Flower ``Context.state`` (which lasts as
long as one Flower run) and, unless the node config says ``memory-dir=off``, in a file under
``memory-dir`` (default ``$FLWR_HOME/federa-memory``), so that it outlives the Flower run: a
``federa run --resume`` is a new Flower run, and a restarted SuperNode a new process.

Every entry is tagged with the round that produced it. When the server asks for round ``r``, it
has finished (and checkpointed) every round before ``r``, so an entry from a round ``< r`` is
valid and one from round ``>= r`` comes from an attempt the server never completed (it stopped,
then resumed from an earlier checkpoint): that one is dropped, and the client trains from the
memory it had before, exactly as the in-process engine, whose checkpoint holds the memory of
the rounds it completed. Entries are keyed by the run's token (kept in the server's
checkpoint, so the same across resumes), the method and the client id.

With no valid entry (first round, ``memory-dir=off`` after a resume or a node restart, a
wiped disk) the client gets an empty memory, which a client rule must read as "no memory yet":
SCAFFOLD then starts the client from cᵢ = 0, as the paper does for a client never sampled, and
FedSA-LoRA from the private tensors as the method built them (the ClientApp fills those in).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context

from federa.types import State

_PREFIX = "federa.memory"
OFF = "off"


def memory_dir(node_config: dict[str, Any]) -> Path | None:
    """Where this node keeps client memory on disk, or None (``memory-dir=off``: Context.state only)."""
    value = str(node_config.get("memory-dir", "") or "")
    if value == OFF:
        return None
    if value:
        return Path(value)
    from flwr.supercore.utils import get_flwr_home

    return get_flwr_home() / "federa-memory"


class NodeMemory:
    """One client's round-tagged memory on this node (see the module docstring)."""

    def __init__(self, context: Context, run_token: str, method: str, client_id: int) -> None:
        self.context = context
        # A file name from what identifies the entry; the hash keeps odd method names out of paths.
        self.key = hashlib.sha256(f"{run_token}\0{method}\0{client_id}".encode()).hexdigest()[:32]
        root = memory_dir(context.node_config)
        self.folder = None if root is None else root / self.key

    # -- the two places an entry lives -----------------------------------------------------

    def _state_name(self, rnd: int) -> str:
        return f"{_PREFIX}.{self.key}.{rnd}"

    def _rounds(self) -> set[int]:
        prefix = f"{_PREFIX}.{self.key}."
        found = {int(k[len(prefix):]) for k in self.context.state.array_records if k.startswith(prefix)}
        if self.folder is not None and self.folder.is_dir():
            found |= {int(p.stem) for p in self.folder.glob("*.safetensors") if p.stem.isdigit()}
        return found

    def _read(self, rnd: int) -> State:
        name = self._state_name(rnd)
        if name in self.context.state.array_records:
            return dict(self.context.state.array_records[name].to_torch_state_dict())
        from safetensors.torch import load_file

        return load_file(str(self.folder / f"{rnd}.safetensors"))

    def _drop(self, rnd: int) -> None:
        name = self._state_name(rnd)
        if name in self.context.state.array_records:
            del self.context.state.array_records[name]
        if self.folder is not None:
            (self.folder / f"{rnd}.safetensors").unlink(missing_ok=True)

    # -- what the client sees ----------------------------------------------------------------

    def load(self, rnd: int) -> State:
        """The memory to start round ``rnd`` from: the newest entry of a round before it ({} if none).

        Entries of rounds ``>= rnd`` (never completed by the server) and entries older than the
        one returned (superseded) are dropped."""
        rounds = sorted(self._rounds())
        valid = [r for r in rounds if r < rnd]
        for r in rounds:
            if r >= rnd or (valid and r < valid[-1]):
                self._drop(r)
        return self._read(valid[-1]) if valid else {}

    def peek(self, rnd: int) -> State:
        """What :meth:`load` would return for round ``rnd``, dropping nothing.

        For evaluation (FedSA-LoRA's personalised scores after round ``rnd - 1``): it runs before the
        server checkpoints that round, so the entry that round started from must stay, in case the
        server stops and runs the round again."""
        valid = [r for r in self._rounds() if r < rnd]
        return self._read(max(valid)) if valid else {}

    def keep(self, rnd: int, memory: State) -> None:
        """Store the memory round ``rnd`` produced (the one it started from stays until a later
        round is asked for: round ``rnd`` may yet be run again)."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in memory.items()}
        self.context.state.array_records[self._state_name(rnd)] = ArrayRecord(tensors)
        if self.folder is not None:
            from safetensors.torch import save_file

            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{rnd}.safetensors.tmp"
            save_file(tensors, str(tmp))
            os.replace(tmp, self.folder / f"{rnd}.safetensors")  # a crash leaves the old entry or the new one
