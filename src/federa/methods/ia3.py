"""(IA)³ (Liu et al., 2022) through Hugging Face peft: learned vectors rescale activations.

Each target Linear gets a vector initialised to ones: it multiplies the output of attention
key/value projections and the *input* of the ``feedforward_modules`` (the FFN's second
projection), so the initial model is exactly the pretrained one. The classifier head is in
peft's ``modules_to_save`` (``task_type=SEQ_CLS``), so it trains and travels too.

The default targets are peft's own for BERT. Note that the suffix ``output.dense`` matches
both ``attention.output.dense`` and the FFN's ``output.dense``, so both are rescaled on input.
"""

from __future__ import annotations

from pathlib import Path

import peft
from pydantic import Field
from torch import nn

from federa.errors import ModelError
from federa.methods.base import Method
from federa.types import State
from federa.methods.targets import match_linears
from federa.settings import NameList, Section


class Ia3Settings(Section):
    target_modules: NameList = Field(default_factory=lambda: ["key", "value", "output.dense"])
    feedforward_modules: NameList = Field(default_factory=lambda: ["output.dense"])


class Ia3(Method):
    name = "ia3"
    settings = Ia3Settings
    # Few parameters (biases, per-channel scales, soft prompts) must each move further to change
    # the model as much. Best of the lr grid on the built-in data (400 train / 150 test examples):
    # {2e-2: .86, 5e-2: .93, 1e-1: .85}: the largest rate of all, as its vectors multiply
    # activations around 1.
    default_lr = 5e-2

    def peft_config(self) -> peft.IA3Config:
        c = self.cfg.ia3
        return peft.IA3Config(task_type=peft.TaskType[self.peft_task_type], target_modules=list(c.target_modules),
                              feedforward_modules=list(c.feedforward_modules))

    def apply(self, model: nn.Module, setup: State) -> nn.Module:
        c = self.cfg.ia3
        extra = sorted(set(c.feedforward_modules) - set(c.target_modules))
        if extra:
            raise ModelError(f"ia3.feedforward_modules {extra} are not in ia3.target_modules; "
                             "add them to ia3.target_modules or drop them")
        match_linears(model, list(c.target_modules), key="ia3.target_modules")
        return peft.get_peft_model(model, self.peft_config())

    def save(self, model: nn.Module, out_dir: Path, setup: State) -> None:
        """A peft adapter folder: ``PeftModel.from_pretrained(pretrained, out_dir)`` loads it."""
        model.save_pretrained(out_dir)
