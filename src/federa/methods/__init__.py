"""Method registry: a method turns a pretrained model into the model that trains and travels.

Each method is one module holding its class, its config section (``settings``) and its
default learning rate, as peft keeps ``LoraConfig`` beside the LoRA layers. Adding a method
is one new module and one line here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from federa.registry import load

if TYPE_CHECKING:
    from federa.config import Config
    from federa.methods.base import Method
    from federa.settings import Section

_REGISTRY: dict[str, str] = {
    "fft": "federa.methods.fft:FullFineTuning",
    "lora": "federa.methods.lora:Lora",
    "federa": "federa.methods.federa:FeDeRA",
    "slora": "federa.methods.slora:SLoRA",
    "bitfit": "federa.methods.bitfit:BitFit",
    "ia3": "federa.methods.ia3:Ia3",
    "prompt": "federa.methods.prompt:PromptTuning",
    "prefix": "federa.methods.prefix:PrefixTuning",
    "adapter": "federa.methods.adapter:Adapter",
}


def available_methods() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def method_class(name: str) -> type[Method]:
    return load(_REGISTRY[name])


def default_lr(name: str) -> float:
    return method_class(name).default_lr


def method_sections() -> dict[str, type[Section]]:
    """Config section name → its settings class, for every method that defines settings of its own.

    Only a class's own ``settings`` count: a subclass that defines none (a LoRA-family method reading
    ``lora:``) inherits its parent's attribute, and a ``<name>:`` section copied from it would be
    accepted and then read by nothing."""
    return {name: own for name in _REGISTRY if (own := vars(method_class(name)).get("settings")) is not None}


def lora_methods() -> tuple[str, ...]:
    """The methods the federated-LoRA variants apply to (each class's ``lora_variants``)."""
    return tuple(name for name in _REGISTRY if method_class(name).lora_variants)


def get_method(name: str, cfg: Config, peft_task_type: str = "SEQ_CLS") -> Method:
    """Instantiate the method ``name`` with its settings from ``cfg``, for a task with this head."""
    return method_class(name)(cfg, peft_task_type)
