"""Federated-LoRA variants, combinable with either LoRA initialisation: ``<method>+<variant>``.

``lora+ffa``, ``federa+ffa``, ``federa+rolora`` ... name an initialisation (plain LoRA or FeDeRA's
SVD) and a federated-LoRA scheme; the scheme may freeze factors (what trains, hence what
travels) and replace the run's strategy for that method. Adding one is one entry here (plus
its strategy module when it has its own aggregation rule).
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
]}
LORA_BASES = ("lora", "federa")  # the initialisations a variant applies to


def split_method(name: str) -> tuple[str, str | None]:
    """``"federa+ffa"`` → ("federa", "ffa"); ``"lora"`` → ("lora", None); an ``@aggregator`` suffix
    (``"federa+ffa@fedprox"``, see :mod:`federa.strategies.per_method`) is not part of either."""
    base, _, variant = name.partition("@")[0].partition("+")
    return base, variant or None


def aggregator_of(name: str) -> str | None:
    """``"federa@fedadam"`` → "fedadam"; None without ``@``."""
    return name.partition("@")[2] or None


def method_problem(name: str, known: tuple[str, ...]) -> str | None:
    """Why ``name`` is not a method (with or without a variant), or None."""
    base, variant = split_method(name)
    if base not in known:
        return f"unknown method '{base}'; choose from {', '.join(known)}"
    if variant is not None:
        if variant not in VARIANTS:
            return f"unknown federated-LoRA variant '{variant}' in '{name}'; choose from {', '.join(VARIANTS)}"
        if base not in LORA_BASES:
            return f"'{name}': variants apply to {' and '.join(LORA_BASES)} only, e.g. federa+{variant}"
    return None  # an @aggregator is checked by federa.strategies.per_method.aggregator_problem
    if variant not in VARIANTS:
        return f"unknown federated-LoRA variant '{variant}' in '{name}'; choose from {', '.join(VARIANTS)}"
    if base not in LORA_BASES:
        return f"'{name}': variants apply to {' and '.join(LORA_BASES)} only, e.g. federa+{variant}"
    return None
