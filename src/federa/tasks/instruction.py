"""Instruction tuning of a causal language model: a prompt, a response, loss on the response only.

Rows come as Alpaca columns (``data.instruction_column``, optional ``data.input_column``,
``data.output_column``) or as chat messages (``data.messages_column``: a list of
``{"role", "content"}`` whose last message is the assistant's answer). The prompt is rendered with
the tokenizer's chat template where it has one (the user turn = instruction, a blank line, input);
without one, Alpaca rows use the plain Alpaca layout (``### Instruction: … ### Response:``) and
multi-turn chat data is refused. The assistant turn is the template's own (so the model learns the
template's end-of-turn token), else the response followed by the EOS token.

Truncation to ``max_length`` never drops the whole response: the prompt is cut first, from the
left (its end, the generation prompt, stays), but keeps at least half the window when the
response alone would fill it; the response is then cut from the right to what is left.

Evaluation: the mean loss per response token over the test set and its perplexity; greedy
generations (batched, ``data.max_new_tokens``) on the first ``data.generation_examples`` test
rows, scored by exact match (SQuAD-normalised) and ROUGE-L. The main metric defaults to
exact match when every training answer is short (at most :data:`SHORT_ANSWER_WORDS` words), else
ROUGE-L. A non-IID partition groups by ``data.category_column`` (task, source, topic) where the
data has one, else by quintile of the answer's length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federa.errors import DataError, ModelError
from federa.generation_metrics import exact_match, rouge_l
from federa.tasks.base import Task, backbone_problem, require_columns

if TYPE_CHECKING:
    import numpy as np
    import torch
    from datasets import Dataset
    from torch import nn
    from transformers import PreTrainedTokenizerBase
    from federa.config import DataConfig

ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"
SHORT_ANSWER_WORDS = 4
IGNORE = -100  # the label index cross-entropy skips (prompt tokens and padding)
LOSS_CHUNK = 8  # rows per forward pass for the loss: a (rows x length x vocab) logits tensor is big
NUM_SAMPLES = 3  # generations kept per evaluation for report.md


def split_lengths(prompt: int, response: int, max_length: int) -> tuple[int, int]:
    """(prompt tokens kept from the end, response tokens kept from the start) within ``max_length``.

    The prompt is cut first; it keeps at least ``max_length // 2`` tokens (or all it has) so that
    a long answer cannot push the question out entirely, and the response gets the rest: at
    least ``max_length - max_length // 2`` tokens, never none.
    """
    if prompt + response <= max_length:
        return prompt, response
    keep_prompt = min(prompt, max(max_length - response, max_length // 2))
    return keep_prompt, min(response, max_length - keep_prompt)


class InstructionCollator:
    """Right-pads ``input_ids``/``labels`` of a batch (training and loss); drops every other column."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer  # evaluation generates and decodes with it
        self.pad_id = tokenizer.pad_token_id

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _as_message_list(value: Any) -> list[dict[str, str]] | None:
    if not isinstance(value, list) or not value:
        return None
    out = []
    for m in value:
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return None
        out.append({"role": m["role"], "content": m["content"]})
    return out


class Instruction(Task):
    name = "instruction"
    metrics = ("rouge_l", "exact_match")
    peft_task_type = "CAUSAL_LM"

    def __init__(self, data: DataConfig) -> None:
        super().__init__(data)
        self.short_answers = False  # set from the training answers by encode_labels
        self._samples: dict[str, list[dict[str, str]]] = {}  # dataset fingerprint → the last generations

    # -- data -----------------------------------------------------------------------------

    def layout(self, columns: list[str]) -> str:
        d = self.data
        if d.messages_column in columns:
            return "chat"
        if d.instruction_column in columns and d.output_column in columns:
            return "alpaca"
        raise DataError(
            f"instruction data needs columns '{d.instruction_column}' and '{d.output_column}' (Alpaca layout; set "
            f"data.instruction_column, data.output_column) or a column '{d.messages_column}' of chat messages (set "
            f"data.messages_column); available columns: {', '.join(columns)}")

    def normalise(self, ds: Dataset, where: str) -> Dataset:
        """Standard columns: ``prompt`` (chat messages before the answer), ``response``, ``category``."""
        from datasets import Dataset

        d = self.data
        if len(ds) == 0:
            raise DataError(f"{where} has no rows")
        layout = self.layout(ds.column_names)
        has_cat = d.category_column in ds.column_names
        cats = [("" if c is None else str(c)) for c in ds[d.category_column]] if has_cat else [""] * len(ds)
        prompts, responses, bad = [], [], 0
        if layout == "chat":
            for row in ds[d.messages_column]:
                msgs = _as_message_list(row)
                if msgs is None or len(msgs) < 2 or msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
                    bad += 1
                    continue
                prompts.append(msgs[:-1])
                responses.append(msgs[-1]["content"])
            fix = (f"each '{d.messages_column}' cell must be a list of {{role, content}} messages ending with a "
                   "non-empty assistant message")
        else:
            require_columns(ds, {d.instruction_column: "data.instruction_column", d.output_column: "data.output_column"},
                            where)
            has_input = d.input_column in ds.column_names
            inputs = ds[d.input_column] if has_input else [None] * len(ds)
            for ins, inp, out in zip(ds[d.instruction_column], inputs, ds[d.output_column]):
                if not isinstance(ins, str) or not ins.strip() or out is None or not str(out).strip():
                    bad += 1
                    continue
                text = ins.strip() + (f"\n\n{str(inp).strip()}" if inp is not None and str(inp).strip() else "")
                prompts.append([{"role": "user", "content": text}])
                responses.append(str(out).strip())
            fix = f"drop or fill rows with an empty '{d.instruction_column}' or '{d.output_column}'"
        if bad:
            raise DataError(f"{where}: {bad} of {len(ds)} rows have no usable prompt and answer; {fix}")
        return Dataset.from_dict({"prompt": prompts, "response": responses, "category": cats})

    def encode_labels(self, splits: Mapping[str, Dataset]) -> tuple[dict[str, Dataset], list[str]]:
        """No labels to encode: the "label names" are the categories (``all`` without a category column)."""
        cats = sorted({c for s in splits.values() for c in s["category"]} - {""})
        first = next(iter(splits.values()))
        self.short_answers = all(len(r.split()) <= SHORT_ANSWER_WORDS for r in first["response"])
        return dict(splits), cats or ["all"]

    def main_metric(self, chosen: str | None) -> str:  # type: ignore[override]  # per data, not per class
        if chosen is None:
            return "exact_match" if self.short_answers else "rouge_l"
        return super().main_metric(chosen)

    def strata(self, train: Dataset, label_names: list[str]) -> tuple[np.ndarray, list[str]]:
        import numpy as np

        if len(label_names) > 1:
            index = {n: i for i, n in enumerate(label_names)}
            return np.asarray([index[c] for c in train["category"]], dtype=np.int64), list(label_names)
        # No categories: skew by answer length instead (quintiles of the word count).
        words = np.asarray([len(r.split()) for r in train["response"]])
        edges = np.unique(np.quantile(words, [0.2, 0.4, 0.6, 0.8]))
        ids = np.searchsorted(edges, words, side="left")
        names = [f"answer <= {int(e)} words" for e in edges] + [f"answer > {int(edges[-1])} words" if len(edges) else "all"]
        used = sorted(set(ids.tolist()))
        remap = {old: new for new, old in enumerate(used)}
        return np.asarray([remap[i] for i in ids], dtype=np.int64), [names[i] for i in used]

    # -- tokens ---------------------------------------------------------------------------

    def render(self, tokenizer: PreTrainedTokenizerBase, prompt: list[dict[str, str]],
               response: str) -> tuple[list[int], list[int]]:
        """(prompt token ids ending in the generation prompt, the assistant turn's ids)."""
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": response}], tokenize=False)
            # The template's own assistant turn (with its end-of-turn token), where it extends the prompt.
            turn = full[len(text):] if full.startswith(text) else response + (tokenizer.eos_token or "")
            return (tokenizer(text, add_special_tokens=False)["input_ids"],
                    tokenizer(turn.rstrip("\n"), add_special_tokens=False)["input_ids"])
        if len(prompt) != 1 or prompt[0]["role"] != "user":
            raise ModelError("chat-message data with more than one user turn (or a system message) needs a tokenizer "
                             "with a chat template, and this model's has none; use a chat model (model.builtin=smollm2) "
                             "or give the data as instruction/input/output columns")
        text = ALPACA_PROMPT.format(instruction=prompt[0]["content"])
        # BOS where the tokenizer has one (Llama; GPT-2's is its EOS), never an encoder's [CLS] ... [SEP] pair.
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        return (bos + tokenizer(text, add_special_tokens=False)["input_ids"],
                tokenizer(response + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"])

    def tokenize(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Dataset:
        def enc(batch: dict) -> dict:
            out: dict[str, list] = {"input_ids": [], "labels": [], "prompt_length": [], "question": []}
            for prompt, response in zip(batch["prompt"], batch["response"]):
                p, r = self.render(tokenizer, prompt, response)
                kp, kr = split_lengths(len(p), len(r), max_length)
                p = p[len(p) - kp:]
                out["input_ids"].append(p + r[:kr])
                out["labels"].append([IGNORE] * kp + r[:kr])
                out["prompt_length"].append(kp)
                out["question"].append(prompt[-1]["content"])
            return out

        return ds.map(enc, batched=True, remove_columns=["prompt"]).rename_column("response", "reference")

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> InstructionCollator:
        return InstructionCollator(tokenizer)

    # -- model ----------------------------------------------------------------------------

    def auto_model_class(self) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def head_config(self, label_names: list[str]) -> dict[str, Any]:
        return {}  # the LM head is the pretrained one: nothing fresh, nothing seeded

    def load_model(self, path: Path, label_names: list[str], seed: int) -> nn.Module:
        from safetensors import SafetensorError
        from transformers import AutoModelForCausalLM

        try:
            model, info = AutoModelForCausalLM.from_pretrained(str(path), output_loading_info=True)
        except (OSError, ValueError, SafetensorError) as err:
            raise ModelError(f"cannot load a causal LM from {path}: {str(err).splitlines()[0]}") from None
        if (why := backbone_problem(model.base_model_prefix, info)) is not None:  # a body left randomly initialised
            raise ModelError(f"model.path {path}: {why}; config.json does not describe these weights: "
                             "restore the model's own config.json")
        return model

    # -- evaluation -----------------------------------------------------------------------

    def evaluate(self, model: nn.Module, test: Dataset, collate: Any, label_names: list[str],
                 batch_size: int, device: torch.device | str, precision: str = "fp32") -> dict[str, float]:
        import torch

        from federa.precision import autocast

        model.eval()
        nll, tokens = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(test), LOSS_CHUNK):
                batch = {k: v.to(device) for k, v in collate(test.select(range(start, min(start + LOSS_CHUNK, len(test))))
                                                                .to_list()).items()}
                n = int((batch["labels"][:, 1:] != IGNORE).sum())
                if n == 0:
                    continue
                with autocast(device, precision):
                    loss = model(**batch).loss.float()  # mean over the batch's response tokens
                nll += loss.item() * n
                tokens += n
        loss = nll / max(tokens, 1)
        limit = self.data.generation_examples
        rows = test.select(range(min(len(test), limit))) if limit is not None else test
        generated = generate(model, collate.tokenizer, [r["input_ids"][:r["prompt_length"]] for r in rows],
                             self.data.max_new_tokens, batch_size, device, precision)
        refs = rows["reference"]
        self._samples[test._fingerprint] = [
            {"question": q, "reference": ref, "generation": g}
            for q, ref, g in list(zip(rows["question"], refs, generated))[:NUM_SAMPLES]]
        n = max(len(refs), 1)
        return {
            "rouge_l": sum(rouge_l(g, r) for g, r in zip(generated, refs)) / n,
            "exact_match": sum(exact_match(g, r) for g, r in zip(generated, refs)) / n,
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),  # capped: an untrained model's loss may overflow exp
        }

    def samples_for(self, test: Dataset) -> list[dict[str, str]]:
        """The first few generations of the last evaluation on ``test`` (report.md shows them)."""
        return list(self._samples.get(test._fingerprint, []))


def stop_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end an answer: every special token (EOS, end of turn, padding)."""
    return sorted({i for i in tokenizer.all_special_ids if i is not None} - {tokenizer.bos_token_id} |
                  ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()))


def generate(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]], max_new_tokens: int,
             batch_size: int, device: torch.device | str, precision: str = "fp32") -> list[str]:
    """Greedy continuations of ``prompts`` (token ids), batched and left-padded, cut at the first stop token."""
    import torch

    from federa.precision import autocast

    stops = stop_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    out: list[str] = []
    model.eval()
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, p in enumerate(chunk):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        with torch.no_grad(), autocast(device, precision):
            seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                  max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad,
                                  temperature=None, top_p=None, top_k=None)
        for row in seqs[:, width:].tolist():
            cut = next((i for i, t in enumerate(row) if t in stops), len(row))
            out.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return out
