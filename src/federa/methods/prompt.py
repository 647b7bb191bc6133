"""Prompt tuning (Lester et al., 2021) through Hugging Face peft: trainable soft-prompt tokens.

``prompt.num_virtual_tokens`` embeddings are prepended to every input's token embeddings;
the encoder is frozen, the soft prompt and the classifier head (peft's ``modules_to_save``
for ``task_type=SEQ_CLS``) train and travel. The prompt starts as the embeddings of randomly
sampled vocabulary tokens (``SAMPLE_VOCAB``), which Lester et al. found better than a random
init: it starts on the scale of real token embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from federa.errors import ModelError
from federa.methods.base import Method
from federa.settings import SHAPES, Section
from federa.types import State

if TYPE_CHECKING:
    import peft
    from torch import nn


def check_positions(model: nn.Module, virtual_tokens: int, max_length: int, key: str) -> None:
    """Virtual tokens take position slots: they and the longest input must fit the model's positions."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and virtual_tokens + max_length > limit:
        raise ModelError(
            f"{key}={virtual_tokens} plus max_length={max_length} exceeds the model's {limit} positions; "
            f"set {key}<={limit - max_length} or lower max_length"
        )


def model_dims(model: nn.Module) -> dict[str, int]:
    """The sizes peft's prompt learning needs, read through the config's attribute aliases.

    peft looks them up in ``config.to_dict()`` under a few fixed names, so it misses configs
    that store them under others (DistilBERT: ``dim``, ``n_layers``, ``n_heads``); transformers'
    attribute map answers the standard names for every architecture.
    """
    c = model.config
    return {"token_dim": c.hidden_size, "num_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads}


class PromptSettings(Section):
    num_virtual_tokens: int = Field(20, ge=1, description="Soft prompt length (method prompt).",
                                    json_schema_extra=SHAPES)


class PromptTuning(Method):
    name = "prompt"
    settings = PromptSettings
    # Few parameters (biases, per-channel scales, soft prompts) must each move further to change
    # the model as much. Best of the lr grid on the built-in data (400 train / 150 test examples):
    # {3e-3: .24, 1e-2: .74, 3e-2: .73}.
    default_lr = 1e-2

    def peft_config(self, model: nn.Module) -> peft.PromptTuningConfig:
        import peft

        return peft.PromptTuningConfig(
            task_type=peft.TaskType[self.peft_task_type],
            num_virtual_tokens=self.cfg.prompt.num_virtual_tokens,
            prompt_tuning_init=peft.PromptTuningInit.SAMPLE_VOCAB,
            **model_dims(model),
        )

    def apply(self, model: nn.Module, setup: State) -> nn.Module:
        import peft

        if self.peft_task_type == "TOKEN_CLS":
            # peft prepends the virtual tokens to the sequence, and its token classifier then scores
            # them too: the outputs no longer line up one-to-one with the words' labels.
            raise ModelError("method prompt cannot run task=token_classification: the soft prompt shifts every "
                             "token's position against its tag; use lora, federa, ia3, bitfit or adapter")
        check_positions(model, self.cfg.prompt.num_virtual_tokens, self.cfg.max_length, "prompt.num_virtual_tokens")
        # SAMPLE_VOCAB draws token ids from torch's global stream, which Job seeds around apply().
        return peft.get_peft_model(model, self.peft_config(model))

    def save(self, model: nn.Module, out_dir: Path, setup: State) -> None:
        """A peft adapter folder: ``PeftModel.from_pretrained(pretrained, out_dir)`` loads it."""
        model.save_pretrained(out_dir)
