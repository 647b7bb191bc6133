"""Full fine-tuning: every parameter trains and travels."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from federa.methods.base import Method, State


class FullFineTuning(Method):
    name = "fft"

    def apply(self, model: nn.Module, setup: State) -> nn.Module:
        model.requires_grad_(True)
        return model

    def save(self, model: nn.Module, out_dir: Path, setup: State) -> None:
        model.save_pretrained(out_dir)
