"""Prefix tuning (Li & Liang, 2021) through Hugging Face peft: trainable key/value prefixes.

``prefix.num_virtual_tokens`` learned key/value vectors are prepended in every attention layer
(peft passes them to the model as its ``past_key_values`` cache); the classifier head trains too.

peft 0.21 only does this for a model whose ``forward`` takes a ``past_key_values`` argument.
Transformers 5 renamed that argument to ``cache`` in BERT-family models (and others), so for
them peft's forward raises on the first batch. :meth:`Prefix.apply` checks the same condition
peft checks and fails up front with one line instead; once peft or the model accepts
``past_key_values`` again, the method runs unchanged.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from federa.errors import ModelError
from federa.methods.base import Method
from federa.methods.prompt import check_positions, model_dims
from federa.settings import SHAPES, Section
from federa.types import State

if TYPE_CHECKING:
    import peft
    import transformers
    from torch import nn


def _takes(module: nn.Module, arg: str) -> bool:
    return arg in inspect.signature(module.forward).parameters


def check_prefix_support(pm: peft.PeftModel) -> None:
    """Raise ModelError where peft's prefix-tuning forward would refuse the model."""
    import peft
    import transformers

    base = pm.base_model
    name = getattr(pm, "transformer_backbone_name", None)
    backbone = base.get_submodule(name) if name else base
    if _takes(base, "past_key_values") or _takes(backbone, "past_key_values"):
        return
    instead = " (it takes `cache` instead)" if _takes(backbone, "cache") else ""
    raise ModelError(
        f"method prefix cannot run on {type(base).__name__}: peft {peft.__version__} prefix tuning passes "
        f"`past_key_values`, which its forward in transformers {transformers.__version__} does not accept{instead}; "
        "use method prompt, ia3 or lora instead"
    )


class PrefixSettings(Section):
    num_virtual_tokens: int = Field(10, ge=1, description="Prefix length per layer (method prefix).",
                                    json_schema_extra=SHAPES)


class PrefixTuning(Method):
    name = "prefix"
    settings = PrefixSettings
    default_lr = 1e-2  # peft's usual rate: prefix cannot run on BERT with transformers 5 (see above)

    def peft_config(self, model: nn.Module) -> peft.PrefixTuningConfig:
        import peft

        return peft.PrefixTuningConfig(task_type=peft.TaskType[self.peft_task_type],
                                       num_virtual_tokens=self.cfg.prefix.num_virtual_tokens, **model_dims(model))

    def apply(self, model: nn.Module, setup: State) -> nn.Module:
        import peft

        check_positions(model, self.cfg.prefix.num_virtual_tokens, self.cfg.max_length, "prefix.num_virtual_tokens")
        pm = peft.get_peft_model(model, self.peft_config(model))
        check_prefix_support(pm)
        return pm

    def save(self, model: nn.Module, out_dir: Path, setup: State) -> None:
        """A peft adapter folder: ``PeftModel.from_pretrained(pretrained, out_dir)`` loads it."""
        model.save_pretrained(out_dir)
