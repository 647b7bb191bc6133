"""What happens to a round's replies on the server, in order: the strategy and its wrappers.

    replies → [secure aggregation] → validate → [clip deltas] → [server optimiser]
            → [DP: clip to C, fixed-denominator mean, noise] → strategy.aggregate

Each [ ] is a wrapper around everything to its right, present when the config asks for it;
a wrapper acts on the replies on the way in (validate, clip) and on the new state on the way
out (noise, then the server optimiser, so that it only ever sees the noised mean: its moments
are post-processing and cost no privacy). Adding a wrapper is one module and one line in
:data:`WRAPPERS`; what it needs from the others is declared on the class and checked here,
so an impossible stack is refused when the config is read, by capability, never by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from federa.strategies.base import Strategy, Wrapper
from federa.strategies.clip import ClipDeltas
from federa.strategies.dp import DpNoise
from federa.strategies.registry import _REGISTRY, strategy_class
from federa.strategies.secure import SecureAggregation
from federa.strategies.server_opt import ServerOptimizer
from federa.strategies.validate import Validate

if TYPE_CHECKING:
    from federa.config import Config
    from federa.settings import Section

WRAPPERS: tuple[type[Wrapper], ...] = (SecureAggregation, Validate, ClipDeltas, ServerOptimizer, DpNoise)  # outermost first


def build_stack(cfg: Config, strategy: str | None = None) -> Strategy:
    """The strategy named by ``cfg.strategy`` (or ``strategy``, a method variant's own rule) inside
    every wrapper the config turns on."""
    stack = strategy_class(strategy or cfg.strategy).from_config(cfg)
    for wrapper in reversed(WRAPPERS):
        if wrapper.wanted(cfg):
            stack = wrapper.wrap(stack, cfg)
    return stack


def stack_problem(cfg: Config, strategy: str | None = None) -> str | None:
    """Why the stack ``cfg`` asks for cannot work, or None."""
    stack = build_stack(cfg, strategy)
    layers = stack.layers() if isinstance(stack, Wrapper) else [stack]
    wrappers, core = [w for w in layers if isinstance(w, Wrapper)], layers[-1]
    for w in wrappers:
        if w.covers_state_only and core.client_hook.client_rule is not None and core.client_hook.client_sends_extra:
            return (f"{_label(w)} covers only the model update, but strategy={core.name}'s clients also send "
                    "tensors of their own that it would not cover; turn one of them off")
    for w in wrappers:
        if w.needs_aggregation and not core.aggregates:
            return (f"{_label(w)} acts on what a round aggregates, and the {core.name} baseline aggregates "
                    "nothing; turn it off for this run")
    for part in [*wrappers, core]:
        if (why := part.check(cfg)) is not None:
            return why
    hiding = [w for w in wrappers if w.hides_individual_updates]
    for w in wrappers:
        if hiding and w.needs_individual_updates and w is not hiding[0]:
            return (f"{_label(hiding[0])} gives the server only the sum of the updates, but {_label(w)} needs "
                    "each client's update; turn one of them off")
        if w.needs_linear and not core.linear:
            return (f"{_label(w)} needs a strategy that averages the updates (e.g. strategy=fedavg), "
                    f"got strategy={core.name}")
    return None


def _label(w: Wrapper) -> str:
    # The config switch a user would turn off, e.g. "dp.enabled" or "robust.clip_delta_norm".
    return {SecureAggregation: "secure_aggregation", Validate: "robust.max_update_norm",
            ClipDeltas: "robust.clip_delta_norm", DpNoise: "dp.enabled", ServerOptimizer: "server_opt"}.get(
        type(w), type(w).__name__)


def strategy_sections() -> dict[str, type[Section]]:
    """Config section name → settings class, for every strategy and wrapper that has settings."""
    out = {name: cls.settings for name in _REGISTRY if (cls := strategy_class(name)).settings is not None}
    out.update({w.section: w.settings for w in WRAPPERS if w.section is not None and w.settings is not None})
    return out
