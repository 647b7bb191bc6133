"""Make a saved peft adapter folder loadable by ``AutoPeftModelFor....from_pretrained(DIR)`` alone.

peft's auto classes rebuild the base model from ``base_model_name_or_path`` in
``adapter_config.json`` with no arguments, so a fresh head gets the pretrained config's label
count (2 by default) and the saved head no longer fits. The adapter folder therefore gets a
``base/`` folder: the trained model's config (label count, names, problem type) beside links to
the original weights and tokenizer files (no copy of the weights), and ``base_model_name_or_path``
points there. The tokenizer is saved beside the adapter too, as ``AutoPeftModel`` expects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase


def self_contained_adapter(out_dir: Path, model: nn.Module, base_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Point ``out_dir``'s adapter at a base that already has the trained model's head shape."""
    adapter_config = out_dir / "adapter_config.json"
    if not adapter_config.is_file():
        return  # not a peft adapter (FFT saves a whole model, bitfit/adapter their own format)
    base = out_dir / "base"
    base.mkdir(exist_ok=True)
    model.config.to_json_file(str(base / "config.json"))  # PeftModel forwards .config to the base model
    for f in sorted(Path(base_path).iterdir()):
        link = base / f.name
        if f.is_file() and f.name != "config.json" and not link.exists():
            # Relative, so the results folder can move together with the model folder's relative place;
            # absolute when they lie on different roots.
            try:
                link.symlink_to(os.path.relpath(f.resolve(), base))
            except ValueError:
                link.symlink_to(f.resolve())
    cfg = json.loads(adapter_config.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = str(base.resolve())
    adapter_config.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    tokenizer.save_pretrained(str(out_dir))
