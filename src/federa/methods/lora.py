"""Standard LoRA through Hugging Face peft: A random (Kaiming), B zero, head trained.

The classifier head is in peft's ``modules_to_save`` (added by ``task_type=SEQ_CLS``), so it
trains and travels with the adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from federa.errors import ModelError
from federa.methods.base import Method
from federa.methods.targets import TargetLayer, architecture_default, layer_shape, match_linears
from federa.settings import SHAPES, NameList, Section, split_list
from federa.types import State

if TYPE_CHECKING:
    import peft
    from torch import nn
    from transformers.pytorch_utils import Conv1D


def _rank_list(v: Any) -> Any:
    """``--set lora.client_ranks=2,4,8`` arrives as one string, ``=4`` as one int; YAML lists pass through."""
    return [v] if isinstance(v, int) and not isinstance(v, bool) else split_list(v)


class LoraSettings(Section):
    """``lora:`` the adapter shape, shared by ``lora`` and ``federa`` (same shapes, other init)."""

    r: int = Field(8, description="Adapter rank.", json_schema_extra=SHAPES)
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator: update = B·A·alpha/r.")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: NameList | None = Field(
        None, description="Layers (name suffixes) that get adapters. None: peft's default for the model's "
                          "architecture (BERT: query, value; DeBERTa-v2: query_proj, value_proj; GPT-2: c_attn).",
        json_schema_extra=SHAPES,
    )

    client_ranks: Annotated[list[int] | None, BeforeValidator(_rank_list)] = Field(
        None, description="Heterogeneous client ranks (lora+flora, lora+flexlora, lora+hetlora and their federa+ "
                          "forms; other methods train every client at lora.r): client c trains at "
                          "client_ranks[c % len], so one entry per client, or a shorter list cycled over clients, "
                          "e.g. [2, 4, 8]. Each must be <= lora.r, the server's rank; None: every client at lora.r.",
        json_schema_extra=SHAPES,
    )

    @field_validator("r")
    @classmethod
    def _positive_rank(cls, r: int) -> int:
        if r <= 0:
            raise ValueError(f"lora.r must be a positive integer, got {r}; try lora.r=8")
        return r

    @model_validator(mode="after")
    def _client_ranks_fit(self) -> LoraSettings:
        ranks = self.client_ranks
        if ranks is None:
            return self
        if not ranks:
            raise ValueError("lora.client_ranks is empty; give at least one rank, e.g. [2, 4, 8], or leave it unset")
        for rank in ranks:
            if isinstance(rank, bool) or rank <= 0:
                raise ValueError(f"lora.client_ranks holds {rank!r}; every rank must be a positive integer")
            if rank > self.r:
                # The server's adapter holds every client's: it must be at least as wide as the widest.
                raise ValueError(f"lora.client_ranks holds {rank}, above lora.r={self.r} (the server's rank); "
                                 f"set lora.r={max(ranks)}")
        return self

    def rank_of(self, client: int) -> int:
        """The LoRA rank client ``client`` trains at (``client_ranks`` cycled; lora.r when unset)."""
        return self.r if self.client_ranks is None else self.client_ranks[client % len(self.client_ranks)]


def lora_targets(model: nn.Module, targets: list[str] | None) -> list[str]:
    """``lora.target_modules`` as set, or peft's default for the model's architecture when None."""
    return list(targets) if targets is not None else architecture_default(model, "lora.target_modules")


def find_target_linears(model: nn.Module, targets: list[str] | None, rank: int) -> dict[str, TargetLayer]:
    """Map module name -> Linear/Conv1D for every ``lora.target_modules`` match; validate the rank.

    ``targets=None`` means the architecture's default (:func:`lora_targets`). Raises ModelError
    naming the available Linear modules when a target matches nothing, and the offending matrix
    when ``rank`` exceeds min(out, in).
    """
    found = match_linears(model, lora_targets(model, targets), key="lora.target_modules")
    for name, layer in found.items():
        out_f, in_f = layer_shape(layer)
        limit = min(out_f, in_f)
        if rank > limit:
            raise ModelError(
                f"lora.r={rank} is larger than min(out, in)={limit} of '{name}' "
                f"({out_f}x{in_f}); set lora.r<={limit}"
            )
    return found


class Lora(Method):
    name = "lora"
    settings = LoraSettings
    lora_variants = True
    # Best of a small grid on the built-in model and data (3 rounds × 2 clients × 10 steps, test
    # accuracy in brackets): {1e-3: .58, 3e-3: .79, 1e-2: .83}.
    default_lr = 1e-2

    def peft_config(
        self, targets: list[str], fan_in_fan_out: bool, init_lora_weights: bool | str = True, rank_multiplier: int = 1
    ) -> peft.LoraConfig:
        import peft

        c = self.cfg.lora
        return peft.LoraConfig(
            task_type=peft.TaskType[self.peft_task_type],
            r=c.r * rank_multiplier,
            # alpha scales with r so that alpha/r (the update scaling) is unchanged.
            lora_alpha=c.alpha * rank_multiplier,
            lora_dropout=c.dropout,
            target_modules=list(targets),
            # Conv1D stores its weight (in, out); peft must know, or it warns and flips it itself.
            fan_in_fan_out=fan_in_fan_out,
            init_lora_weights=init_lora_weights,
        )

    def adapted(self, model: nn.Module, init_lora_weights: bool | str = True) -> peft.PeftModel:
        """``model`` with LoRA layers on the resolved ``lora.target_modules``."""
        import peft
        from transformers.pytorch_utils import Conv1D

        targets = lora_targets(model, self.cfg.lora.target_modules)
        layers = find_target_linears(model, targets, self.cfg.lora.r)
        transposed = {isinstance(layer, Conv1D) for layer in layers.values()}
        if len(transposed) > 1:
            # One LoraConfig has one fan_in_fan_out: peft would silently flip it per layer.
            raise ModelError("lora.target_modules mixes Linear and Conv1D layers; target one kind only")
        config = self.peft_config(targets, transposed == {True}, init_lora_weights)
        return peft.get_peft_model(model, config)

    def apply(self, model: nn.Module, setup: State) -> nn.Module:
        return self.adapted(model)

    def save(self, model: nn.Module, out_dir: Path, setup: State) -> None:
        model.save_pretrained(out_dir)
