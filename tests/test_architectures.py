"""Every supported architecture: per-architecture defaults, FeDeRA's exact start, trained adapters
that reload with peft, and the methods that cannot run refusing in one line.

Each model is a tiny random one (2 layers, hidden 32, 2 heads, FFN 64) built from its config
class with the built-in MiniLM tokenizer's vocabulary and saved to a tmp folder: no downloads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import peft
import pytest
import torch
import transformers as T
from transformers.pytorch_utils import Conv1D

from federa.client import local_update
from federa.config import build_config
from federa.errors import ModelError
from federa.job import Job, prepare_job
from federa.methods.adapter import load_adapter
from federa.methods.base import trainable_state
from federa.methods.bitfit import load_bitfit
from federa.methods.lora import find_target_linears
from federa.pretrained import builtin_model_path

LAYERS = 2
SIZES = dict(hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64,
             max_position_embeddings=128)


def _configs(vocab: int, pad: int, bos: int, eos: int) -> dict[str, Callable[[], T.PretrainedConfig]]:
    ids = dict(vocab_size=vocab, pad_token_id=pad)
    return {
        "bert": lambda: T.BertConfig(**SIZES, **ids),
        "roberta": lambda: T.RobertaConfig(**SIZES, **ids),
        "deberta-v2": lambda: T.DebertaV2Config(**SIZES, **ids),
        "distilbert": lambda: T.DistilBertConfig(dim=32, n_layers=LAYERS, n_heads=2, hidden_dim=64,
                                                 max_position_embeddings=128, **ids),
        "electra": lambda: T.ElectraConfig(embedding_size=32, **SIZES, **ids),
        "xlm-roberta": lambda: T.XLMRobertaConfig(**SIZES, **ids),
        # A decoder: batched classification pools the last non-pad token, so pad_token_id must be set.
        "gpt2": lambda: T.GPT2Config(n_embd=32, n_layer=LAYERS, n_head=2, n_inner=64, n_positions=128,
                                     bos_token_id=bos, eos_token_id=eos, **ids),
    }


# peft's default LoRA targets per model_type (DistilBERT: our fallback, peft has none).
LORA_DEFAULTS = {
    "bert": {"query", "value"}, "roberta": {"query", "value"}, "deberta-v2": {"query_proj", "value_proj"},
    "distilbert": {"q_lin", "v_lin"}, "electra": {"query", "value"}, "xlm-roberta": {"query", "value"},
    "gpt2": {"c_attn"},
}
ARCHS = tuple(LORA_DEFAULTS)
# Their real tokenizers give no token_type_ids, and DistilBERT's forward refuses them.
NO_TOKEN_TYPES = {"distilbert", "gpt2"}

# (method, architecture) -> a regex of the one-line ModelError it must refuse with.
PREFIX_REFUSAL = r"^method prefix cannot run on \w+ForSequenceClassification: .*`past_key_values`"
ADAPTER_REFUSAL = r"^adapter.target_modules: the default .* is BERT-family only .*; set adapter.target_modules"
REFUSALS = {("prefix", a): PREFIX_REFUSAL for a in ARCHS} | {
    ("adapter", "distilbert"): ADAPTER_REFUSAL, ("adapter", "gpt2"): ADAPTER_REFUSAL,
}
OTHER_METHODS = ("bitfit", "ia3", "prompt", "adapter", "prefix")


def _save_tiny(arch: str, out: Path) -> Path:
    kwargs = {"model_input_names": ["input_ids", "attention_mask"]} if arch in NO_TOKEN_TYPES else {}
    tok = T.AutoTokenizer.from_pretrained(str(builtin_model_path()), **kwargs)
    config = _configs(tok.vocab_size, tok.pad_token_id, tok.cls_token_id, tok.sep_token_id)[arch]()
    torch.manual_seed(0)
    T.AutoModel.from_config(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _job(model_dir: Path, csv: Path, *overrides: str) -> Job:
    return prepare_job(build_config({}, [
        f"model.path={model_dir}", f"data.path={csv}", "num_clients=4", "clients_per_round=2", "local_steps=2",
        "batch_size=8", "max_length=32", "lora.r=4", "adapter.bottleneck=4", "prompt.num_virtual_tokens=3",
        "model.num_threads=1", *overrides,
    ]))


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    return {a: _save_tiny(a, tmp_path_factory.mktemp(a)) for a in ARCHS}


@pytest.fixture(scope="module", params=ARCHS)
def job(request, model_dirs, small_csv) -> Job:
    return _job(model_dirs[request.param], small_csv)


@pytest.fixture(scope="module")
def batch(job) -> dict[str, torch.Tensor]:
    rows = [job.test[i] for i in range(8)]
    return {k: v for k, v in job.collate(rows).items() if k != "labels"}


def arch(job: Job) -> str:
    return json.loads((job.model_path / "config.json").read_text())["model_type"]  # ARCHS are model types


@torch.no_grad()
def logits(model, batch) -> torch.Tensor:
    model.eval()
    return model(**batch).logits


def train_two_steps(job: Job, name: str):
    method, model, setup = job.server_model(name)
    update = local_update(model, trainable_state(model), job.shard(0), job.collate, job.train_settings(name))
    assert update.metrics["steps"] == 2 and math.isfinite(update.metrics["train_loss"])
    return method, model, setup


def reload(name: str, job: Job, out_dir: Path):
    base = job.base_model()
    if name == "bitfit":
        return load_bitfit(base, out_dir)
    if name == "adapter":
        return load_adapter(base, out_dir)
    return peft.PeftModel.from_pretrained(base, str(out_dir))


def test_lora_defaults_are_peft_s_per_architecture(job):
    found = find_target_linears(job.base_model(), None, job.cfg.lora.r)
    assert {n.rsplit(".", 1)[-1] for n in found} == LORA_DEFAULTS[arch(job)]
    assert len(found) == LAYERS * len(LORA_DEFAULTS[arch(job)])


def test_federa_starts_exactly_at_the_base_model(job, batch):
    _, model, _ = job.server_model("federa")
    diff = (logits(model, batch) - logits(job.base_model(), batch)).abs().max().item()
    assert diff < 1e-5, diff


@pytest.mark.parametrize("name", ["lora", "federa"])
def test_trained_adapter_reloads_on_the_original_model(name, job, batch, tmp_path):
    method, model, setup = train_two_steps(job, name)
    trained = logits(model, batch)
    method.save(model, tmp_path, setup)
    diff = (logits(reload(name, job, tmp_path), batch) - trained).abs().max().item()
    assert diff < 1e-5, diff
    assert (trained - logits(job.base_model(), batch)).abs().max() > 1e-3  # the two steps moved the model


@pytest.mark.parametrize("name", OTHER_METHODS)
def test_other_methods_train_and_reload_or_refuse_in_one_line(name, job, batch, tmp_path):
    refusal = REFUSALS.get((name, arch(job)))
    if refusal:
        with pytest.raises(ModelError, match=refusal) as err:
            job.server_model(name)
        assert "\n" not in str(err.value)
        return
    method, model, setup = train_two_steps(job, name)
    trained = logits(model, batch)
    method.save(model, tmp_path, setup)
    torch.testing.assert_close(logits(reload(name, job, tmp_path), batch), trained, atol=1e-5, rtol=0)


def test_gpt2_conv1d_residual_is_stored_transposed(model_dirs, small_csv):
    """c_attn stores Wᵀ (in x out); FeDeRA's factors refer to W, as peft's fan_in_fan_out does."""
    job = _job(model_dirs["gpt2"], small_csv)
    original = job.base_model()
    _, model, setup = job.server_model("federa")
    s = job.cfg.lora.alpha / job.cfg.lora.r
    name = "transformer.h.0.attn.c_attn"
    w = original.get_submodule(name).weight  # (32, 96): in x out
    layer = model.base_model.model.get_submodule(name)
    assert isinstance(layer.get_base_layer(), Conv1D) and layer.fan_in_fan_out
    a, b = setup[f"{name}.lora_A"], setup[f"{name}.lora_B"]
    assert a.shape == (4, 32) and b.shape == (96, 4)
    rebuilt = layer.get_base_layer().weight + s * (b @ a).T
    assert (rebuilt - w).abs().max() < 1e-6
    # The top-r directions moved out: the residual's largest singular value is W's (r+1)-th.
    sv = torch.linalg.svdvals(w.double())
    assert torch.isclose(torch.linalg.svdvals(layer.get_base_layer().weight.double())[0], sv[4], atol=1e-5)


@pytest.mark.parametrize("arch_name,targets", [("distilbert", "attention.out_lin,ffn.lin2"),
                                               ("gpt2", "attn.c_proj,mlp.c_proj")])
def test_adapter_runs_where_its_targets_are_set(arch_name, targets, model_dirs, small_csv, tmp_path):
    job = _job(model_dirs[arch_name], small_csv, f"adapter.target_modules={targets}")
    method, model, setup = train_two_steps(job, "adapter")
    rows = [job.test[i] for i in range(8)]
    batch = {k: v for k, v in job.collate(rows).items() if k != "labels"}
    method.save(model, tmp_path, setup)
    torch.testing.assert_close(logits(reload("adapter", job, tmp_path), batch), logits(model, batch), atol=1e-5, rtol=0)


def test_unknown_lora_target_on_gpt2_lists_its_conv1d_layers(model_dirs, small_csv):
    job = _job(model_dirs["gpt2"], small_csv, "lora.target_modules=query")
    with pytest.raises(ModelError, match=r"'query' matches no Linear module .*available: attn.c_attn, attn.c_proj"):
        job.server_model("lora")


@pytest.mark.parametrize("arch_name", ARCHS)
def test_slora_switch_at_full_rank_keeps_the_stage1_model(arch_name, model_dirs, small_csv):
    """SLoRA's switch (sparse ΔW → LoRA from its SVD, base back to W0) loses nothing when r is full:
    the logits right after it equal the stage-1 model's, on Linear and on GPT-2's transposed Conv1D."""
    from dataclasses import replace

    from federa.methods.base import load_trainable_state

    job = _job(model_dirs[arch_name], small_csv, "methods=slora", "lora.r=32", "slora.warmup_rounds=1",
               "slora.density=0.2")
    method, model, setup = job.server_model("slora")
    update = local_update(model, trainable_state(model), job.shard(0), job.collate,
                          replace(job.train_settings("slora"), lr=0.05))
    rows = [job.test[i] for i in range(8)]
    b = {k: v for k, v in job.collate(rows).items() if k != "labels"}
    load_trainable_state(model, update.state)
    stage1 = logits(model, b)
    assert (stage1 - logits(job.base_model(), b)).abs().max() > 1e-3  # stage 1 moved the model
    after, _, _ = method.next_stage(1, model, update.state, setup)
    torch.testing.assert_close(logits(after, b), stage1, atol=1e-5, rtol=0)
