"""``<method>@<aggregator>``: the server's aggregation chosen per method, so that one run or one
``federa compare`` puts FedAvg, FedProx, SCAFFOLD and the FedOpt family side by side on the same
partitions (``federa@fedadam,federa@scaffold,lora+ffa@fedprox``).

An aggregator is either a strategy of the registry (``fedavg``, ``fedprox``, ``scaffold``,
``median``, ``trimmed_mean``: it replaces ``strategy`` for that method) or a server optimiser
(``fedavgm``, ``fedadam``, ``fedyogi``, ``fedadagrad``: it sets ``server_opt.name`` for that
method). Every other key keeps the run's value: ``fedprox.mu``, ``server_opt.lr``, betas and tau
apply to every method that uses them. ``fedavgm`` is SGD with server momentum; with
``server_opt.momentum`` left at 0 it uses 0.9 (Hsu et al. 2019's usual value), since FedAvgM with
no momentum would be FedAvg under another name.

Methods without ``@`` use the run's ``strategy`` and ``server_opt`` exactly as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from federa.methods import available_methods
from federa.methods.variants import VARIANTS, aggregator_of, split_method, variant_problem
from federa.strategies.registry import available_strategies

if TYPE_CHECKING:
    from federa.config import Config
    from federa.strategies.base import Strategy

# Alias → server_opt.name (Reddi et al., ICLR 2021, name the adaptive ones FedAdam/FedYogi/FedAdagrad).
SERVER_OPTIMISERS = {"fedavgm": "sgd", "fedadam": "adam", "fedyogi": "yogi", "fedadagrad": "adagrad"}
FEDAVGM_MOMENTUM = 0.9


def aggregators() -> tuple[str, ...]:
    """Names allowed after ``@``: strategies that are not a variant's own rule, and the server optimisers."""
    own = {v.strategy for v in VARIANTS.values()}
    return tuple(s for s in available_strategies() if s not in own) + tuple(SERVER_OPTIMISERS)


def method_names_help() -> str:
    """Every name a method may be written with: base, ``+variant``, ``@aggregator``."""
    everywhere = [f"+{n}" for n, v in VARIANTS.items() if not v.lora_only]
    lora = [f"+{n}" for n, v in VARIANTS.items() if v.lora_only]
    return (f"a method is <base>[+<variant>][@<aggregator>]: base {', '.join(available_methods())}; "
            f"variant {', '.join(lora)} (LoRA-family bases), {', '.join(everywhere)} (any base); "
            f"aggregator @{', @'.join(aggregators())}")


def method_name_problem(method: str) -> str | None:
    """Why ``method`` (``federa``, ``lora+ffa``, ``federa@fedadam``, ...) is not a method, or None.

    A misspelt part gets every name a method may be written with, so one error teaches them all."""
    base, variant = split_method(method)
    if base not in available_methods():
        return f"unknown method '{base}'; {method_names_help()}"
    if variant is not None and variant not in VARIANTS:
        return f"{variant_problem(method)}; {method_names_help()}"
    return variant_problem(method) or aggregator_problem(method)


def aggregator_problem(method: str) -> str | None:
    """Why ``method``'s ``@aggregator`` cannot be, or None (no ``@``, or a usable one)."""
    agg = aggregator_of(method)
    if agg is None:
        return None
    if agg not in aggregators():
        return f"unknown aggregator '@{agg}' in '{method}'; choose from {', '.join(aggregators())}"
    variant = split_method(method)[1]
    if variant is not None and VARIANTS[variant].strategy is not None and agg not in SERVER_OPTIMISERS:
        return (f"'{method}': +{variant} brings its own aggregation ({VARIANTS[variant].strategy}), so "
                f"@{agg} cannot replace it; drop @{agg}, or wrap it in a server optimiser "
                f"(@{', @'.join(SERVER_OPTIMISERS)})")
    return None


def method_config(cfg: Config, method: str) -> Config:
    """``cfg`` as ``method`` sees it: its ``@aggregator`` written into ``strategy`` / ``server_opt``.

    A copy without re-validation (the run's config was validated whole; the per-method stack is
    checked by :func:`~federa.strategies.stack.stack_problem` on this copy)."""
    agg = aggregator_of(method)
    if agg is None:
        return cfg
    if agg in SERVER_OPTIMISERS:
        opt = {"name": SERVER_OPTIMISERS[agg]}
        if agg == "fedavgm" and cfg.server_opt.momentum == 0:
            opt["momentum"] = FEDAVGM_MOMENTUM
        return cfg.model_copy(update={"server_opt": cfg.server_opt.model_copy(update=opt)})
    return cfg.model_copy(update={"strategy": agg})


def own_strategy(method: str) -> str | None:
    """The aggregation rule ``method``'s variant brings (``lora+fedex`` → "fedex"), or None."""
    variant = split_method(method)[1]
    return VARIANTS[variant].strategy if variant else None


def method_stack(cfg: Config, method: str) -> Strategy:
    """The server-side stack ``method`` aggregates with: its variant's rule (``+fedex``) or its
    ``@aggregator`` or the run's strategy, inside the wrappers its config turns on."""
    from federa.strategies.stack import build_stack

    return build_stack(method_config(cfg, method), own_strategy(method))


def method_stack_problem(cfg: Config, method: str) -> str | None:
    """Why ``method``'s own stack cannot work, or None; None too for a method that aggregates with
    the run's stack (checked once for the run)."""
    from federa.strategies.stack import stack_problem

    if own_strategy(method) is None and aggregator_of(method) is None:
        return None
    return stack_problem(method_config(cfg, method), own_strategy(method))
