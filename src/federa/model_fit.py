"""Whether a model folder can serve a task at all, read from its config.json before any weight loads:
a causal LM for ``task=instruction``, an architecture with the task's head class otherwise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from federa.tasks.base import Task

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
# peft task type → (transformers' model_type → class table, what the head is called in the error line)
_HEADS = {"SEQ_CLS": ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "sequence-classification"),
          "TOKEN_CLS": ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "token-classification")}


def model_problem(task: Task, path: Path) -> str | None:
    """Why the model at ``path`` cannot serve ``task`` (one line naming the fix), or None."""
    from transformers.models.auto import modeling_auto

    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # resolve_model_path has already named a broken config.json
    model_type = cfg.get("model_type")
    archs = [a for a in cfg.get("architectures") or [] if isinstance(a, str)]
    what = f"{archs[0]} ({model_type})" if archs else str(model_type)
    if task.peft_task_type == "CAUSAL_LM":
        causal = (any(a.endswith(_CAUSAL_SUFFIXES) for a in archs) if archs
                  else model_type in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
        if not causal:
            return (f"task=instruction needs a causal (decoder) language model, and the model at {path} is {what}; "
                    "set model.builtin=smollm2 or model.path to a causal-LM folder (Llama, Qwen2, Mistral, GPT-2, ...)")
        return None
    table, head = _HEADS.get(task.peft_task_type, (None, None))
    if table is not None and model_type not in getattr(modeling_auto, table):
        return (f"task={task.name} needs a {head} head, which transformers has no class for on the model at {path} "
                f"({what}); use task=instruction with instruction data for a causal LM, or a model that has one")
    return None
