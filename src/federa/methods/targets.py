"""Which layers a method attaches to: name suffixes, as in peft's ``target_modules``.

A target is an ``nn.Linear`` or a transformers ``Conv1D`` (GPT-2's projections: a Linear whose
weight is stored transposed, in x out). Defaults per architecture come from peft's own tables,
keyed by ``config.model_type``; :data:`FALLBACK_DEFAULTS` only fills the gaps peft leaves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from federa.errors import ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers.pytorch_utils import Conv1D

# A string: the alias is only ever read in annotations, and naming the classes would import torch.
TargetLayer = "nn.Linear | Conv1D"

# Architectures peft 0.21 has no entry for, named as peft names their BERT counterparts
# (LoRA on query/value; IA3 on key/value and the FFN's second projection). ELECTRA and
# XLM-RoBERTa use BERT's module names; MPNet (model.builtin=mpnet) names them q/k/v/o.
# "bert" stands for peft's own BERT entry (read from peft when needed, not at import).
FALLBACK_DEFAULTS: dict[str, dict[str, list[str] | str]] = {
    "lora.target_modules": {"distilbert": ["q_lin", "v_lin"], "mpnet": ["q", "v"]},
    "ia3.target_modules": {"distilbert": ["k_lin", "v_lin", "ffn.lin2"], "electra": "bert",
                           "xlm-roberta": "bert", "mpnet": ["k", "v", "output.dense"]},
    "ia3.feedforward_modules": {"distilbert": ["ffn.lin2"], "electra": "bert", "xlm-roberta": "bert",
                                "mpnet": ["output.dense"]},
}


# Causal LMs (task=instruction): every projection of attention and MLP, as PiSSA, QLoRA and
# FlowerTune's baselines adapt (peft's own default, q and v only, would leave FeDeRA's SVD start on 2 of 7).
_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CAUSAL_LM_DEFAULTS: dict[str, dict[str, list[str]]] = {
    "lora.target_modules": {**{t: _LLAMA_LIKE for t in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma",
                                                        "gemma2", "olmo", "olmo2", "granite", "smollm3")},
                            "gpt2": ["c_attn", "c_proj", "c_fc"]},
}


def is_causal_lm(model: nn.Module) -> bool:
    return type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))


def peft_defaults(key: str) -> Mapping[str, list[str]]:
    """Config ``key`` -> peft's default per model_type."""
    from peft.utils import constants

    return {
        "lora.target_modules": constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING,
        "ia3.target_modules": constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
        "ia3.feedforward_modules": constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
    }[key]


def is_target_layer(module: nn.Module) -> bool:
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def layer_shape(layer: TargetLayer) -> tuple[int, int]:
    """(out, in) of the map the layer computes, whichever way its weight is stored."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(layer, Conv1D):
        return layer.weight.shape[1], layer.weight.shape[0]
    return layer.out_features, layer.in_features


def effective_weight(layer: TargetLayer) -> torch.Tensor:
    """The weight as an (out, in) matrix, the orientation peft's LoRA factors refer to."""
    from transformers.pytorch_utils import Conv1D

    return layer.weight.T if isinstance(layer, Conv1D) else layer.weight


def available_suffixes(model: nn.Module) -> str:
    return ", ".join(sorted({".".join(n.split(".")[-2:]) for n, m in model.named_modules() if is_target_layer(m)}))


def architecture_default(model: nn.Module, key: str) -> list[str]:
    """peft's default for config ``key`` on this model's architecture (``config.model_type``)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    peft_table = peft_defaults(key)
    if is_causal_lm(model) and (causal := CAUSAL_LM_DEFAULTS.get(key, {}).get(model_type)) is not None:
        return list(causal)
    names = peft_table.get(model_type) or FALLBACK_DEFAULTS[key].get(model_type)
    if names == "bert":
        names = peft_table["bert"]
    if names is None:
        raise ModelError(
            f"{key}: no default for model type '{model_type}'; set {key} "
            f"(available: {available_suffixes(model)})"
        )
    return list(names)


def match_linears(model: nn.Module, targets: list[str], key: str) -> dict[str, TargetLayer]:
    """Module name -> layer for every Linear/Conv1D whose name is, or ends with ``.``+, a target.

    ``key`` names the config key in the one-line error raised when a target matches nothing;
    the error lists the Linear suffixes the model does have.
    """
    linears = {n: m for n, m in model.named_modules() if is_target_layer(m)}
    found: dict[str, TargetLayer] = {}
    for target in targets:
        hits = {n: m for n, m in linears.items() if n == target or n.endswith("." + target)}
        if not hits:
            raise ModelError(
                f"{key}: '{target}' matches no Linear module in the model; available: {available_suffixes(model)}"
            )
        found.update(hits)
    return found
