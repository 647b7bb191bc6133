"""Method registry: a method turns a pretrained model into the model that trains and travels.

Modules are imported lazily so that validating a config does not import peft.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from federa.config import Config
    from federa.methods.base import Method

# name -> (module, class, default learning rate). FFT moves every weight, so it needs a
# learning rate ~10x smaller than the adapters, which start at (or near) zero effect.
_REGISTRY: dict[str, tuple[str, str, float]] = {
    "fft": ("federa.methods.fft", "FullFineTuning", 5e-5),
    "lora": ("federa.methods.lora", "Lora", 1e-3),
    "federa": ("federa.methods.federa", "FeDeRA", 5e-4),
}


def available_methods() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def default_lr(name: str) -> float:
    return _REGISTRY[name][2]


def get_method(name: str, cfg: Config) -> Method:
    """Instantiate the method ``name`` with its settings from ``cfg``."""
    module, cls, _ = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)(cfg)
