"""FedSA-LoRA (Guo et al., ICLR 2025): share A, keep B on each client.

The paper finds that in federated LoRA the A matrices learn what all clients have in common and
the B matrices what is specific to each, so it aggregates A only. Round t, sampled clients S:
client i starts from the global A and its *own* Bᵢ (and, as in the paper's code, its own task
head), trains both locally and sends back Aᵢ alone; the server sets
A ← Σᵢ nᵢ·Aᵢ / Σᵢ nᵢ over S (FedAvg's weights) and never sees B. What travels each way is A
only: the method variant (``lora+fedsa``, ``federa+fedsa``) freezes B and the head in the global
model (:class:`~federa.methods.variants.Variant` ``private``), so they are not in the state.

Where Bᵢ lives: in-process, this strategy keeps every simulated client's copy for it, keyed by
client id and checkpointed; a client never sampled yet holds B as the method built it (LoRA: 0;
FeDeRA: its SVD factor; the head: the seeded initialisation every party draws alike). On Flower
the node keeps it as the client's memory (``federa.engines.flower.node_memory``: Context.state and
``memory-dir``, round-tagged, so a resume is exact); a client with no memory yet starts from the
values its node's freshly built model holds, the same tensors as :meth:`FedSA.start_private`'s.

Evaluation: each client's personalised model (global A + its Bᵢ and head) is scored on its own
held-out split (``partition.client_val_fraction``, 0.1 by default for this variant). The global
test set needs one model: in-process, federa uses global A with the mean of the B (and head) of every
client that has trained so far, each client counted once (the initial values before round 1). That
mean is an evaluation artefact of the simulation: the protocol itself never sends B anywhere. On
Flower no party can build it, so the nodes score the personalised models (an evaluate message per
node, :func:`federa.client_eval.node_metrics`): ``client_score`` is exactly the in-process value,
and the test-set metrics are the *mean of the test-set metrics* of the personalised models of the
clients that have trained so far (round 0, when every B is the start value, is the same on both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


from federa.strategies.capabilities import ClientHook, Personalised
from federa.strategies.fedavg import FedAvg
from federa.types import LocalRule, State

if TYPE_CHECKING:
    import torch

    from federa.config import Config


class FedSAClient(LocalRule):
    """Client i trains from the global A and its own B (``memory``), and keeps its new B."""

    def private(self) -> State:
        return self.memory

    def finish(self, new_state: State, steps: int) -> tuple[State, State]:
        return {}, {k: new_state[k] for k in self.memory}


class FedSA(FedAvg, ClientHook, Personalised):
    name = "fedsa"
    client_rule = FedSAClient
    client_sends_extra = False  # only A goes up, inside the state: DP's clipping and noise cover it

    def __init__(self, clients_per_round: int, seed: int) -> None:
        super().__init__(clients_per_round, seed)
        self.initial: State = {}  # B (and head) as every client builds them
        self.kept: dict[int, State] = {}  # each simulated client's own B and head, after its last round

    @classmethod
    def check(cls, cfg: Config) -> str | None:
        if cfg.strategy == cls.name:
            return "strategy=fedsa is FedSA-LoRA's rule and needs its variant; select methods=lora+fedsa or federa+fedsa"
        if cfg.secure_aggregation:
            # SecAgg+'s legacy messages carry no round tag, so a node could not tell which kept B is valid.
            return ("FedSA-LoRA (…+fedsa) keeps each client's B on its node, round by round, which SecAgg+ rounds "
                    "do not carry; set secure_aggregation=false")
        return super().check(cfg)

    def start_private(self, initial: State) -> None:
        self.initial = {k: v.detach().cpu().clone() for k, v in initial.items()}

    def client_memory(self, client: int) -> State:
        return self.client_private(client)

    def keep_client_memory(self, client: int, memory: State) -> None:
        self.kept[client] = memory

    # aggregate: FedAvg's, A ← Σ nᵢ·Aᵢ / Σ nᵢ over the replies (the only tensors they carry).

    def client_private(self, client: int | None) -> State:
        import torch

        if client is not None:
            return self.kept.get(client, self.initial)
        # Unweighted, in client-id order: the example counts would have to come through the replies,
        # which wrappers may rewrite (DP gives every reply weight 1).
        if not self.kept:
            return self.initial
        return {k: (sum(self.kept[c][k].to(torch.float64) for c in sorted(self.kept)) / len(self.kept)).to(ref.dtype)
                for k, ref in self.initial.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"kept": self.kept}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kept = {int(c): dict(s) for c, s in state.get("kept", {}).items()}
