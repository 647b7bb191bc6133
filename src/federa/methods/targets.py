"""Which Linear modules a method attaches to: name suffixes, as in peft's ``target_modules``."""

from __future__ import annotations

from torch import nn

from federa.errors import ModelError


def match_linears(model: nn.Module, targets: list[str], key: str) -> dict[str, nn.Linear]:
    """Module name -> Linear for every Linear whose name is, or ends with ``.``+, a target.

    ``key`` names the config key in the one-line error raised when a target matches nothing;
    the error lists the Linear suffixes the model does have.
    """
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    found: dict[str, nn.Linear] = {}
    for target in targets:
        hits = {n: m for n, m in linears.items() if n == target or n.endswith("." + target)}
        if not hits:
            available = sorted({".".join(n.split(".")[-2:]) for n in linears})
            raise ModelError(
                f"{key}: '{target}' matches no Linear module in the model; available: {', '.join(available)}"
            )
        found.update(hits)
    return found
