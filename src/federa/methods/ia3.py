"""(IA)³ (Liu et al., 2022) through Hugging Face peft: learned vectors rescale activations.

Each target Linear gets a vector initialised to ones: it multiplies the output of attention
key/value projections and the *input* of the ``feedforward_modules`` (the FFN's second
projection), so the initial model is exactly the pretrained one. The classifier head is in
peft's ``modules_to_save`` (``task_type=SEQ_CLS``), so it trains and travels too.

The default targets are peft's own for the model's architecture (see
:mod:`federa.methods.targets`). On BERT the suffix ``output.dense`` matches both
``attention.output.dense`` and the FFN's ``output.dense``, so both are rescaled on input.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from federa.errors import ModelError
from federa.methods.base import Method
from federa.methods.targets import architecture_default, match_linears
from federa.settings import SHAPES, NameList, Section
from federa.types import State

if TYPE_CHECKING:
    import peft
    from torch import nn
    from transformers.pytorch_utils import Conv1D


class Ia3Settings(Section):
    target_modules: NameList | None = Field(
        None, description="Rescaled layers. None: peft's default for the architecture (BERT: key, value, output.dense).",
        json_schema_extra=SHAPES)
    feedforward_modules: NameList | None = Field(
        None, description="Targets rescaled on their input. None: the architecture's FFN modules among the targets.",
        json_schema_extra=SHAPES)


class Ia3(Method):
    name = "ia3"
    settings = Ia3Settings
    # Few parameters (biases, per-channel scales, soft prompts) must each move further to change
    # the model as much. Best of the lr grid on the built-in data (400 train / 150 test examples):
    # {2e-2: .86, 5e-2: .93, 1e-1: .85}: the largest rate of all, as its vectors multiply
    # activations around 1.
    default_lr = 5e-2

    def targets(self, model: nn.Module) -> tuple[list[str], list[str]]:
        """(target_modules, feedforward_modules), resolved for this model's architecture."""
        c = self.cfg.ia3
        targets = list(c.target_modules) if c.target_modules is not None else \
            architecture_default(model, "ia3.target_modules")
        if c.feedforward_modules is not None:
            return targets, list(c.feedforward_modules)
        # Only the defaults that are targets: peft rejects a feedforward module outside them.
        return targets, [m for m in architecture_default(model, "ia3.feedforward_modules") if m in targets]

    def apply(self, model: nn.Module, setup: State) -> nn.Module:
        import peft
        from transformers.pytorch_utils import Conv1D

        targets, feedforward = self.targets(model)
        extra = sorted(set(feedforward) - set(targets))
        if extra:
            raise ModelError(f"ia3.feedforward_modules {extra} are not in ia3.target_modules; "
                             "add them to ia3.target_modules or drop them")
        layers = match_linears(model, targets, key="ia3.target_modules")
        # GPT-2's Conv1D stores its weight (in, out); peft must know, or it warns and flips it itself.
        transposed = any(isinstance(layer, Conv1D) for layer in layers.values())
        config = peft.IA3Config(task_type=peft.TaskType[self.peft_task_type], target_modules=targets,
                                feedforward_modules=feedforward, fan_in_fan_out=transposed)
        return peft.get_peft_model(model, config)

    def save(self, model: nn.Module, out_dir: Path, setup: State) -> None:
        """A peft adapter folder: ``PeftModel.from_pretrained(pretrained, out_dir)`` loads it."""
        model.save_pretrained(out_dir)
