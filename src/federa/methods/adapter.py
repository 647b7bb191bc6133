"""Bottleneck adapters (Houlsby et al., 2019), written here because AdapterHub's ``adapters``
1.3.0 pins transformers~=4.57 and does not import with transformers 5.

After each transformer layer's attention-output and FFN-output projection (every Linear or
Conv1D whose name ends with one of ``adapter.target_modules``) we insert

    h  ->  h + up(gelu(down(h)))        down: d -> bottleneck,  up: bottleneck -> d, zero init

before the sublayer's dropout, residual and LayerNorm. The zero up-projection makes the
adapted model compute exactly what the pretrained model computed at initialisation. The
adapters and the classification head train; everything else is frozen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from federa.errors import ModelError
from federa.methods.base import Method
from federa.methods.bitfit import INFO_FILE, load_trainables, save_trainables, train_head
from federa.methods.targets import available_suffixes, match_linears
from federa.settings import SHAPES, NameList, Section
from federa.types import State

if TYPE_CHECKING:
    import torch
    from torch import nn


# BERT's attention-output and FFN-output projections; also RoBERTa's, XLM-R's, ELECTRA's and
# DeBERTa-v2's. peft has no adapter table to take per-architecture names from.
BERT_FAMILY_TARGETS = ["attention.output.dense", "output.dense"]


class AdapterSettings(Section):
    bottleneck: int = Field(16, ge=1, description="Bottleneck width of each Houlsby/Pfeiffer adapter.",
                            json_schema_extra=SHAPES)
    target_modules: NameList | None = Field(
        None, description="Linear modules (name suffixes) followed by an adapter. None: the BERT family's "
                          "attention and FFN outputs (attention.output.dense, output.dense).",
        json_schema_extra=SHAPES,
    )


def adapter_targets(model: nn.Module, targets: list[str] | None) -> list[str]:
    """``adapter.target_modules``, or the BERT-family names, refused up front where they do not exist."""
    if targets is not None:
        return list(targets)
    names = {n for n, _ in model.named_modules()}
    if not any(n.endswith("." + t) for n in names for t in BERT_FAMILY_TARGETS):
        raise ModelError(
            f"adapter.target_modules: the default ({', '.join(BERT_FAMILY_TARGETS)}) is BERT-family only and "
            f"{type(model).__name__} has none of them; set adapter.target_modules to its attention-output and "
            f"FFN-output layers (available: {available_suffixes(model)})"
        )
    return list(BERT_FAMILY_TARGETS)


def add_adapters(model: nn.Module, targets: list[str] | None, width: int) -> list[str]:
    """Wrap every target layer of ``model`` in place; return the wrapped module names."""
    from federa.methods.adapter_layers import AdaptedLinear

    names = list(match_linears(model, adapter_targets(model, targets), key="adapter.target_modules"))
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = getattr(parent, child)
        setattr(parent, child, AdaptedLinear(base, width).to(base.weight.device, base.weight.dtype))
    return names


class Adapter(Method):
    name = "adapter"
    settings = AdapterSettings
    # Few parameters (biases, per-channel scales, soft prompts) must each move further to change
    # the model as much. Best of the lr grid on the built-in data (400 train / 150 test examples):
    # {3e-3: .78, 1e-2: .87, 3e-2: .23}.
    default_lr = 1e-2

    def apply(self, model: nn.Module, setup: State) -> nn.Module:
        from federa.methods.adapter_layers import Bottleneck

        c = self.cfg.adapter
        model.requires_grad_(False)
        # The down-projections are random; Job seeds torch's stream around apply(), so the
        # same config always gives the same initial adapters.
        add_adapters(model, c.target_modules, c.bottleneck)
        for module in model.modules():
            if isinstance(module, Bottleneck):
                module.requires_grad_(True)
        train_head(model)
        return model

    def save(self, model: nn.Module, out_dir: Path, setup: State) -> None:
        c = self.cfg.adapter
        save_trainables(model, out_dir, {
            "method": self.name, "bottleneck": c.bottleneck, "target_modules": adapter_targets(model, c.target_modules),
            "how": "federa.methods.adapter.load_adapter(base_model, this_folder)",
        })


def load_adapter(model: nn.Module, out_dir: str | Path) -> nn.Module:
    """Rebuild a saved adapter model from the pretrained ``model`` (same base, same num_labels)."""
    out_dir = Path(out_dir)
    info = json.loads((out_dir / INFO_FILE).read_text())
    add_adapters(model, info["target_modules"], info["bottleneck"])
    load_trainables(model, out_dir)
    return model
