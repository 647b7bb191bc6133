"""Method variants, ``<method>+<variant>``: federated-LoRA schemes and the reference baselines.

``lora+ffa``, ``federa+ffa``, ``federa+rolora`` ... name an initialisation (plain LoRA or FeDeRA's
SVD) and a federated-LoRA scheme; the scheme may freeze factors (what trains, hence what
travels) and replace the run's strategy for that method. ``<any method>+local`` and
``+centralized`` are the baselines a federated run is read against (each client alone; all data
pooled on one machine); they apply to every method. Adding one is one entry here (plus its
strategy module when it has its own aggregation rule).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    paper: str
    frozen: tuple[str, ...] = ()  # parameter-name fragments that never train (nor travel)
    strategy: str | None = None  # the aggregation this scheme needs; None: the run's `strategy`
    # Parameter-name fragments that train on every client but never travel (personalised parts):
    # frozen in the global model, each client keeps its own copy between its rounds.
    private: tuple[str, ...] = ()
    # True: it applies to the LoRA-family methods only (those whose class sets ``lora_variants``,
    # :func:`federa.methods.lora_methods`); False: to every method.
    lora_only: bool = True
    # Methods it cannot follow, each with the reason (one clear line when refused).
    refuses: tuple[tuple[str, str], ...] = ()
    # False for a baseline in which nothing crosses a network: its bytes are 0 by definition,
    # setup broadcast included (each client computes FeDeRA's SVD of the weights it already holds).
    travels: bool = True
    # A module that reshapes the method's adapter (Fed-SB's r×r matrix between B and A): its
    # ``insert(model, cfg)`` runs on every party's model before freezing, and its ``merged(model)``
    # context gives the plain peft model that is saved. None: the method's model as it builds it.
    layers: str | None = None


# The empty fragment is in every name: every tensor the method trains is private to its client.
EVERYTHING = ("",)

VARIANTS: dict[str, Variant] = {v.name: v for v in [
    # FFA-LoRA (Sun et al., ICLR 2024): A stays at its initial value on every client, only B trains
    # and travels, so avg(B)·A = avg(B·A) exactly and the upload halves. With FeDeRA, A is the SVD factor.
    Variant("ffa", "Sun et al., Improving LoRA in Privacy-preserving Federated Learning, ICLR 2024", frozen=("lora_A",)),
    # RoLoRA (Chen et al., 2024): rounds alternate between training B (A fixed) and A (B fixed).
    Variant("rolora", "Chen et al., Robust Federated Finetuning of LLMs via Alternating Optimization of LoRA, 2024",
            strategy="rolora"),
    # FedEx-LoRA (Singhal et al., 2024): average A and B, fold avg(B·A) − avg(B)·avg(A) into the frozen weights.
    Variant("fedex", "Singhal et al., Exact Aggregation for Federated and Efficient Fine-Tuning of Foundation Models, "
            "2024", strategy="fedex"),
    # Heterogeneous client ranks (lora.client_ranks; strategies/hetrank.py): FLoRA stacks the clients'
    # factors and folds the exact Σ p_k·B_k·A_k into the frozen weights; FlexLoRA SVDs Σ p_k·B_k·A_k back
    # to each client's rank; HetLoRA zero-pads, averages with norm weights and truncates.
    Variant("flora", "Wang et al., FLoRA: Federated Fine-Tuning Large Language Models with Heterogeneous "
            "Low-Rank Adaptations, NeurIPS 2024", strategy="flora"),
    Variant("flexlora", "Bai et al., Federated Fine-tuning of Large Language Models under Heterogeneous Tasks "
            "and Client Resources, NeurIPS 2024", strategy="flexlora"),
    Variant("hetlora", "Cho et al., Heterogeneous LoRA for Federated Fine-tuning of On-Device Foundation Models, "
            "EMNLP 2024", strategy="hetlora"),
    # FedSA-LoRA (Guo et al., ICLR 2025): A is shared and averaged; B and the task head stay on each
    # client, as in the paper's code (personalization.local_param: lora_B, classifier).
    Variant("fedsa", "Guo et al., Selective Aggregation for Low-Rank Adaptation in Federated Learning, ICLR 2025",
            strategy="fedsa", private=("lora_B", "modules_to_save")),
    # Fed-SB (Singhal et al., 2025): A and B fixed, an r×r R between them trains and travels
    # (methods/latent.py); averaging R is exact, so the run's strategy (FedAvg) needs no help.
    Variant("fedsb", "Singhal et al., Fed-SB: A Silver Bullet for Extreme Communication Efficiency and Performance "
            "in (Private) Federated LoRA Fine-Tuning, arXiv 2502.15436, 2025",
            frozen=("lora_A.default.weight", "lora_B.default.weight"), layers="federa.methods.latent",
            refuses=(("lora", "LoRA's B starts at 0, so B·R·A and R's gradient Bᵀ·G·Aᵀ stay 0 and R never trains; "
                              "use federa+fedsb, whose A and B come from W's SVD as in Fed-SB's own initialisation"),)),
    # FedSVD (Lee et al., NeurIPS 2025): B alone trains and travels up (A frozen, as in FFA); after each
    # round the server SVDs avg(B)·A into a new orthonormal A (sent down) and B (strategies/fedsvd.py).
    Variant("fedsvd", "Lee et al., FedSVD: Adaptive Orthogonalization for Private Federated Learning with LoRA, "
            "NeurIPS 2025", frozen=("lora_A",), strategy="fedsvd"),
    # FRLoRA (Yan et al., ICLR 2025): each round's s·(avg(B)·avg(A) − B0·A0) is folded into the frozen
    # weights and the adapter restarts from its built factors (strategies/frlora.py).
    Variant("frlora", "Yan et al., Federated Residual Low-Rank Adaptation of Large Language Models, ICLR 2025",
            strategy="frlora"),
    # LoRA-FAIR (Bian et al., ICCV 2025): average A and B, then fit a server-side residual ΔB so that
    # (B̄ + ΔB)·Ā points along avg(B·A) (strategies/lorafair.py).
    Variant("lorafair", "Bian et al., LoRA-FAIR: Federated LoRA Fine-Tuning with Aggregation and Initialization "
            "Refinement, ICCV 2025", strategy="lorafair"),
    # RAVAN (Raje et al., NeurIPS 2025): h heads s_i·B_i·H_i·A_i, B_i and A_i frozen, H_i and s_i train
    # (methods/ravan_layers.py); the server averages s_i·H_i exactly and resets s_i to 1 (strategies/ravan.py).
    Variant("ravan", "Raje et al., Ravan: Multi-Head Low-Rank Adaptation for Federated Fine-Tuning, NeurIPS 2025",
            frozen=("lora_A.default.weight", "lora_B.default.weight"), strategy="ravan",
            layers="federa.methods.ravan_layers"),
    # Reference baselines (strategies/local.py, strategies/centralized.py), any method underneath.
    # local: every client trains alone on its own shard, in the rounds it is sampled, and keeps its model.
    Variant("local", "baseline: each client fine-tunes alone, no aggregation", strategy="local",
            private=EVERYTHING, lora_only=False, travels=False,
            refuses=(("slora", "its stage switch rebuilds the model, which would drop every client's own tensors"),)),
    # centralized: one machine trains on every client's training data pooled, the round's example budget.
    Variant("centralized", "baseline: all clients' training data pooled on one machine", strategy="centralized",
            lora_only=False, travels=False),
]}


def split_method(name: str) -> tuple[str, str | None]:
    """``"federa+ffa"`` → ("federa", "ffa"); ``"lora"`` → ("lora", None); an ``@aggregator`` suffix
    (``"federa+ffa@fedprox"``, see :mod:`federa.strategies.per_method`) is not part of either."""
    base, _, variant = name.partition("@")[0].partition("+")
    return base, variant or None


def aggregator_of(name: str) -> str | None:
    """``"federa@fedadam"`` → "fedadam"; None without ``@``."""
    return name.partition("@")[2] or None


def variant_problem(name: str) -> str | None:
    """Why the ``+variant`` of ``name`` (whose base method exists) cannot be, or None; the full check
    of a method name, base and ``@aggregator`` included, is
    :func:`federa.strategies.per_method.method_name_problem`."""
    from federa.methods import lora_methods

    base, variant = split_method(name)
    if variant is None:
        return None
    if variant not in VARIANTS:
        return f"unknown federated-LoRA variant '{variant}' in '{name}'"
    v = VARIANTS[variant]
    if v.lora_only and base not in lora_methods():
        anywhere = [f"+{n}" for n, w in VARIANTS.items() if not w.lora_only]
        return (f"'{name}': variants apply to {' and '.join(lora_methods())} only, e.g. federa+{variant} "
                f"(the baselines {' and '.join(anywhere)} apply to every method)")
    for refused, why in v.refuses:
        if base == refused:
            return f"'{name}': variant {variant} cannot follow {base}: {why}"
    return None
