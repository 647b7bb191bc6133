"""A method's saved final model, loaded back as a ready ``transformers`` (or ``peft``) model.

Each method saves in the format its ecosystem loads (:meth:`federa.methods.base.Method.save`):
FFT a ``save_pretrained`` folder, the peft methods an adapter folder that ``AutoPeftModel``
loads alone (:mod:`federa.export`), BitFit and the bottleneck adapter their trained tensors
plus a json saying how to put them back. This module undoes each, so a user never needs to
know which one a method used.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from federa.errors import FederaError, ModelError
from federa.results_dir import RunDir

_TOKEN_TASKS = ("token_classification",)
_CAUSAL_TASKS = ("instruction",)


def _head_kind(rd: RunDir, model_config: Path | None) -> str:
    """Which head the saved model has (``token``, ``causal`` or ``sequence``): from the run's summary,
    else the saved config's architecture."""
    if rd.summary.is_file():
        task = json.loads(rd.summary.read_text(encoding="utf-8")).get("run", {}).get("task")
        if task:
            return "token" if task in _TOKEN_TASKS else "causal" if task in _CAUSAL_TASKS else "sequence"
    if model_config is not None and model_config.is_file():
        archs = json.loads(model_config.read_text(encoding="utf-8")).get("architectures") or []
        if any(a.endswith("ForTokenClassification") for a in archs):
            return "token"
        if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
            return "causal"
    return "sequence"


def _auto_classes(kind: str):
    import peft
    import transformers

    if kind == "token":
        return transformers.AutoModelForTokenClassification, peft.AutoPeftModelForTokenClassification
    if kind == "causal":
        return transformers.AutoModelForCausalLM, peft.AutoPeftModelForCausalLM
    return transformers.AutoModelForSequenceClassification, peft.AutoPeftModelForSequenceClassification


def load_final_model(run_dir: Path, method: str, as_peft: bool = False) -> nn.Module:
    """See :func:`federa.load_model`. Raises :class:`FederaError` with the fix when it cannot."""
    rd = RunDir(Path(run_dir))
    final = rd.final_model(method)
    if not final.is_dir():
        done = sorted(p.parent.name for p in rd.root.glob("*/final") if p.is_dir())
        raise FederaError(f"{final}: no final model of '{method}' there (did it finish?); "
                          f"finished here: {', '.join(done) or 'none'}")
    _check_weights(rd, final, method)
    if (final / "adapter_config.json").is_file():
        return _load_peft(rd, final, method, as_peft)
    if as_peft:
        raise ModelError(f"'{method}' did not save a peft adapter; call load_model(..., peft=False)")
    if (final / "config.json").is_file():  # FFT: a whole model
        auto, _ = _auto_classes(_head_kind(rd, final / "config.json"))
        return auto.from_pretrained(str(final))
    from federa.methods.bitfit import INFO_FILE

    info_path = final / INFO_FILE
    if not info_path.is_file():
        raise ModelError(f"{final}: not a model folder federa wrote (no config.json, adapter_config.json or {INFO_FILE})")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    auto, _ = _auto_classes(_head_kind(rd, None))
    base = auto.from_pretrained(info["base_model"], num_labels=info["num_labels"])
    if info.get("method") == "adapter":
        from federa.methods.adapter import load_adapter

        return load_adapter(base, final)
    from federa.methods.bitfit import load_bitfit

    return load_bitfit(base, final)


def _check_weights(rd: RunDir, final: Path, method: str) -> None:
    """Refuse, in one line with the fix, a cut or altered weight file (a disk that filled up, a partial
    copy, a flipped bit)."""
    from federa.weight_files import checksum_problem, weights_problem

    if (why := weights_problem(final) or checksum_problem(final)) is not None:
        # A comparison drops a finished run's checkpoint (federa compare --keep-checkpoints keeps it).
        how = ("saves the final model again from the method's last checkpoint" if rd.checkpoint(method).is_file()
               else "trains that method again from the start (its checkpoint was dropped when it finished)")
        raise ModelError(f"{why}; delete {final} and {rd.result(method)}, then `federa run --resume {rd.root}` {how}")
    if (final / "base").is_dir() and (why := weights_problem(final / "base")) is not None:
        raise ModelError(f"the pretrained model this adapter was trained on is damaged: {why}; copy that model's "
                         "weight files again from where they came from")


def _load_peft(rd: RunDir, final: Path, method: str, as_peft: bool) -> nn.Module:
    import peft

    auto, _ = _auto_classes(_head_kind(rd, final / "base" / "config.json"))
    # What AutoPeftModel does (base from adapter_config's base_model_name_or_path, then the adapter),
    # in two steps: the base alone lacks the trained head, and transformers reports it "MISSING ...
    # newly initialized" although the adapter loads it right after. That report is held back only
    # when every key it names is one the adapter brings; anything else is shown as transformers wrote it.
    base_path = json.loads((final / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    with _held_load_report() as held:
        base, info = auto.from_pretrained(base_path, output_loading_info=True)
    brought = _adapter_keys(final)
    if set(info["missing_keys"]) - brought or info["unexpected_keys"] or info["mismatched_keys"]:
        held.release()
    with warnings.catch_warnings():
        # peft asks the model `is_gradient_checkpointing`, an alias transformers deprecates: not the user's concern.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = peft.PeftModel.from_pretrained(base, str(final))
    fold_file = final / "base_fold.safetensors"
    if fold_file.is_file():
        # FedEx-LoRA moved the frozen weights too: add them before the adapter means anything.
        from safetensors.torch import load_file

        from federa.strategies.fedex import apply_base_fold

        apply_base_fold(model, load_file(str(fold_file)), {})
    if as_peft:
        return model
    if not hasattr(model, "merge_and_unload") or model.peft_config[model.active_adapter].is_prompt_learning:
        raise ModelError(f"'{method}' learns soft tokens, which cannot be merged into the weights; "
                         "call load_model(..., peft=True) for the peft model")
    return model.merge_and_unload()


class _HeldRecords(logging.Filter):
    """Holds back transformers' weight-load report; :meth:`release` emits it after all."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger, self.records = logger, []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            self.records.append(record)
            return False
        return True

    def release(self) -> None:
        for record in self.records:
            self.logger.handle(record)
        self.records = []


@contextmanager
def _held_load_report() -> Iterator[_HeldRecords]:
    logger = logging.getLogger("transformers.modeling_utils")
    held = _HeldRecords(logger)
    logger.addFilter(held)
    try:
        yield held
    finally:
        logger.removeFilter(held)


def _adapter_keys(final: Path) -> set[str]:
    """The base model's parameter names the saved adapter holds (the task head peft saves with it)."""
    from safetensors import safe_open

    with safe_open(str(final / "adapter_model.safetensors"), "pt") as f:
        return {k.removeprefix("base_model.model.") for k in f.keys()}
