"""Fuzzing the input edge: random/malformed configs and data files must give a clean one-line
FederaError (or be handled correctly), never another exception type, never a hang.

Bounded (max_examples per property, a per-case alarm) so the file runs in well under a minute;
the number of cases that ran is printed at the end (`pytest -s`).
"""

from __future__ import annotations

import csv
import json
import signal
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federa.cli import main
from federa.config import Config, build_config, load_config
from federa.data import load_data
from federa.errors import FederaError

CASES: Counter[str] = Counter()  # cases run, per property
OUTCOMES: Counter[str] = Counter()  # data cases: clean error vs loaded
CASE_TIMEOUT_S = 30  # a case that takes longer is a hang
# derandomize: the same cases on every run (reproducible CI); database=None: no .hypothesis/ folder.
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@contextmanager
def no_hang(seconds: int = CASE_TIMEOUT_S):
    def boom(*_):
        raise TimeoutError(f"case took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _one_line(err: FederaError) -> None:
    msg = str(err)
    assert msg and "\n" not in msg and "Traceback" not in msg, repr(msg)


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print(f"\nfuzz cases run: {dict(CASES)} (total {sum(CASES.values())}); data outcomes: {dict(OUTCOMES)}")


# -- configs ---------------------------------------------------------------------------

_SECTIONS = {name: list(f.annotation.model_fields) for name, f in Config.model_fields.items()
             if isinstance(f.annotation, type) and hasattr(f.annotation, "model_fields")}
_KEYS = [k for k in Config.model_fields if k not in _SECTIONS] + [f"{s}.{k}" for s, ks in _SECTIONS.items() for k in ks]
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["fedavg", "median", "lora,federa", "iid", "-1", "1e309", "nan", "[]",
                                           "{a: 1}", "0", "auto", "cuda:9"]),
)
_values = st.recursive(
    _scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=6)
_key = st.one_of(st.sampled_from(_KEYS), st.text(min_size=0, max_size=12),
                 st.sampled_from(_KEYS).map(lambda k: k + ".x"), st.sampled_from(_KEYS).map(lambda k: k[:-1]))


def _nest(pairs: list[tuple[str, object]]) -> dict:
    tree: dict = {}
    for key, value in pairs:
        parts = key.split(".")
        node = tree
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                break
            node = nxt
        else:
            node[parts[-1]] = value
    return tree


@settings(FUZZ, max_examples=150)
@given(pairs=st.lists(st.tuples(_key, _values), max_size=6),
       overrides=st.lists(st.one_of(st.text(max_size=40), st.tuples(_key, _scalars).map(lambda kv: f"{kv[0]}={kv[1]}")),
                          max_size=4))
def test_random_configs_validate_or_fail_in_one_line(pairs, overrides):
    CASES["config"] += 1
    with no_hang():
        try:
            cfg = build_config(_nest(pairs), overrides)
        except FederaError as err:
            _one_line(err)
            return
    assert isinstance(cfg, Config)
    # What validated must survive its own round trip (config.yaml is what --resume reads).
    assert build_config(yaml.safe_load(cfg.to_yaml())) == cfg


@settings(FUZZ, max_examples=40)
@given(content=st.one_of(st.binary(max_size=120), st.text(max_size=120),
                         _values.map(lambda v: yaml.safe_dump(v)), st.dictionaries(_key, _values, max_size=4).map(
                             lambda d: yaml.safe_dump(_nest(list(d.items()))))))
def test_random_config_files_load_or_fail_in_one_line(content, tmp_path_factory):
    CASES["config-file"] += 1
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with no_hang():
        try:
            assert isinstance(load_config(path), Config)
        except FederaError as err:
            _one_line(err)


@settings(FUZZ, max_examples=25)
@given(overrides=st.lists(st.tuples(_key, _scalars).map(lambda kv: f"{kv[0]}={kv[1]}"), min_size=1, max_size=3))
def test_cli_rejects_bad_configs_with_one_error_line(overrides, tmp_path_factory, capsys):
    try:
        build_config({}, overrides)
        return  # a valid config would start training: not a cheap case
    except FederaError:
        pass
    CASES["cli-config"] += 1
    out = tmp_path_factory.mktemp("cli")
    args = ["run", "--no-progress", "--out", str(out / "run")] + [a for o in overrides for a in ("--set", o)]
    with no_hang():
        rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2
    assert len([ln for ln in err.splitlines() if ln.startswith("error: ")]) == 1 and "Traceback" not in err


# -- data files ------------------------------------------------------------------------

_LONG = "word " * 4_000  # 20k characters, ~300x max_length (kept moderate: shrinking reprs it)
_texts = st.one_of(st.text(max_size=40), st.just(""), st.none(), st.integers(), st.floats(allow_nan=True),
                   st.just(_LONG), st.sampled_from(["caf\u00e9", "\u00ff\u00fe", "a\nb", "\x00"]))
_labels = st.one_of(st.integers(-3, 6), st.integers(), st.floats(allow_nan=True), st.none(), st.booleans(),
                    st.sampled_from(["sport", "tech", "", " ", "nan", "1"]))
# Half hostile rows, half plausible ones (no missing cells), so both the error paths and the
# "loads correctly" path get exercised.
_rows = st.one_of(
    st.lists(st.tuples(_texts, _labels), min_size=0, max_size=30),
    st.lists(st.tuples(st.one_of(st.text(max_size=40), st.just(""), st.just(_LONG), st.integers()),
                       st.one_of(st.sampled_from(["sport", "tech", "biz"]), st.integers(0, 3))),
             min_size=0, max_size=30),
)
_columns = st.sampled_from([("text", "label"), ("text", "label", "extra"), ("body", "label"), ("text",),
                            ("label", "text")])


def _write(path: Path, fmt: str, columns: tuple[str, ...], rows: list[tuple]) -> Path:
    records = [dict(zip(columns, (*r, "x"))) for r in rows]  # "extra" gets a constant
    if fmt in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t" if fmt == "tsv" else ",")
            w.writerow(columns)
            for r in records:
                w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    elif fmt == "json":
        path.write_text(json.dumps(records), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = (pa.Table.from_pylist(records) if records
                     else pa.table({c: pa.array([], pa.string()) for c in columns}))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed types: store them as text
            table = pa.Table.from_pylist([{k: None if v is None else str(v) for k, v in r.items()} for r in records])
        pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from federa.pretrained import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def _check_loaded(path: Path, data_overrides: dict, tokenizer) -> None:
    cfg = build_config({"data": {"path": str(path), **data_overrides}})
    try:
        with no_hang():
            # Classification, as a user with such a file would run it (float labels would else be
            # inferred as a regression task, whose invariants test_tasks.py checks).
            data = load_data(cfg.data, "classification")
            # Tokenising is the next step of every run: it must accept whatever load_data returned.
            data.task.tokenize(data.test, tokenizer, 16)
    except FederaError as err:
        _one_line(err)
        OUTCOMES["clean error"] += 1
        return
    OUTCOMES["loaded"] += 1
    n = len(data.label_names)
    assert n >= 2 and len(data.train) >= 1 and len(data.test) >= 1
    for split in (data.train, data.test):
        assert all(isinstance(t, str) for t in split["text"])
        assert all(isinstance(y, int) and 0 <= y < n for y in split["label"])


@settings(FUZZ, max_examples=120)
@given(fmt=st.sampled_from(["csv", "tsv", "json", "jsonl", "parquet"]), columns=_columns, rows=_rows,
       test_size=st.sampled_from([0.2, 0.5, 0.9]), max_train=st.sampled_from([None, 1, 3]))
def test_malformed_data_files_fail_cleanly_or_load_correctly(fmt, columns, rows, test_size, max_train, tmp_path_factory,
                                                              tokenizer):
    CASES["data"] += 1
    path = _write(tmp_path_factory.mktemp("fuzz") / f"data.{fmt}", fmt, columns, rows)
    _check_loaded(path, {"test_size": test_size, "max_train_examples": max_train}, tokenizer)


@settings(FUZZ, max_examples=20)
@given(suffix=st.sampled_from([".csv", ".json", ".jsonl", ".parquet", ".tsv", ".txt"]), payload=st.binary(max_size=200))
def test_raw_bytes_fail_cleanly(suffix, payload, tmp_path_factory, tokenizer):
    """Empty files, non-UTF-8 text and random binary in any supported extension."""
    CASES["bytes"] += 1
    path = tmp_path_factory.mktemp("raw") / f"data{suffix}"
    path.write_bytes(payload)
    _check_loaded(path, {}, tokenizer)


@pytest.mark.parametrize("name,content", [
    ("empty.csv", b""),
    ("latin1.csv", "text,label\ncaf\xe9 au lait,a\nna\xefve,b\n".encode("latin-1")),
    ("one_class.csv", b"text,label\nhello,a\nworld,a\nagain,a\n"),
    ("nan_labels.csv", b"text,label\nhello,1\nworld,\nagain,nan\nmore,2\n"),
    ("float_labels.jsonl", b'{"text": "a", "label": NaN}\n{"text": "b", "label": 1.5}\n{"text": "c", "label": 2}\n'),
    ("list_texts.jsonl", b'{"text": ["a"], "label": 0}\n{"text": ["b"], "label": 1}\n'),
    ("two_rows.csv", b"text,label\nhello,a\nworld,b\n"),
    ("huge_text.csv", b"text,label\n" + b"".join(b"%s,%d\n" % (b"word " * 200_000, i % 2) for i in range(6))),
])
def test_named_bad_files(name, content, tmp_path, tokenizer):
    CASES["named"] += 1
    path = tmp_path / name
    path.write_bytes(content)
    _check_loaded(path, {}, tokenizer)


def test_too_few_rows_to_split(tmp_path, tokenizer):
    """Found by the fuzzer: 2 rows at test_size=0.9 used to raise a bare ValueError."""
    CASES["named"] += 1
    path = tmp_path / "two.csv"
    path.write_text("text,label\nhello,a\nworld,b\n", encoding="utf-8")
    with pytest.raises(FederaError, match="too few to split"):
        load_data(build_config({"data": {"path": str(path), "test_size": 0.9}}).data)


def test_saved_dataset_with_out_of_range_class_labels(tmp_path, tokenizer):
    from datasets import ClassLabel, Dataset, Features, Value

    CASES["named"] += 1
    feats = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b"])})
    ds = Dataset.from_dict({"text": ["x", "y", "z", "w"], "label": [0, 1, 1, 0]}, features=feats)
    # Bypass ClassLabel's own check the way a hand-edited or foreign file would.
    ds = ds.cast_column("label", Value("int64")).map(lambda r, i: {"label": 7 if i == 2 else r["label"]},
                                                     with_indices=True)
    ds = ds.cast_column("label", ClassLabel(names=["a", "b"]))  # may or may not check
    ds.save_to_disk(str(tmp_path / "saved"))
    _check_loaded(tmp_path / "saved", {}, tokenizer)



@pytest.mark.parametrize("content", [b"", b"text,label\nhello,1\nworld,\nagain,nan\n", b"\xff\xfe\x00garbage"])
def test_cli_reports_bad_data_in_one_line(content, tmp_path, tiny_model_dir, capsys):
    CASES["cli-data"] += 1
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    rc = main(["run", "--no-progress", "--out", str(tmp_path / "run"), "--set", f"data.path={path}",
               "--set", f"model.path={tiny_model_dir}", "--set", "methods=lora"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "data" in errors[0], err


# -- client replies ------------------------------------------------------------------------------
# One random reply among four honest ones, on hand-made tensors, through the default stack: it is
# either rejected (the result is the honest clients' FedAvg) or accepted with a weight no larger
# than its registered shard; the new global state is always finite and within max_abs_value.

_G = {"w": __import__("torch").zeros(4), "b": __import__("torch").zeros(())}
_SHARDS = {0: 10, 1: 20, 2: 30, 3: 40, 4: 50}
_counts = st.one_of(st.integers(-5, 10**30), st.integers(2**60, 2**70).map(lambda n: n**8),
                    st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=5))
_metric_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**3, 10**20),
                           st.booleans(), st.none(), st.text(max_size=5))
_metrics = st.dictionaries(st.sampled_from(["train_loss", "samples", "steps", "train_seconds", "other"]),
                           _metric_values, max_size=5)
_small = st.floats(-0.125, 0.125, width=32)
_any = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(FUZZ, max_examples=120)
@given(hostile=st.sets(st.sampled_from(["count", "metrics", "values", "shape"]), max_size=2),
       count=st.integers(1, 100), bad_count=_counts,
       loss=st.floats(0, 10), bad_metrics=_metrics,
       w=st.lists(_small, min_size=4, max_size=4), bad_w=st.lists(_any, min_size=4, max_size=4),
       scale=st.sampled_from([1.0, 1e3, 1e30]))
def test_random_replies_are_rejected_or_bounded(hostile, count, bad_count, loss, bad_metrics, w, bad_w, scale):
    import torch

    from federa.strategies.fedavg import weighted_average
    from federa.strategies.stack import build_stack
    from federa.types import Update

    CASES["reply"] += 1
    honest = {c: Update({"w": torch.full((4,), 0.01 * c), "b": torch.tensor(0.02 * c)}, _SHARDS[c],
                        {"train_loss": 1.0, "samples": 8}) for c in (1, 2, 3, 4)}
    count = bad_count if "count" in hostile else count
    metrics = bad_metrics if "metrics" in hostile else {"train_loss": loss, "samples": 8}
    w_t = torch.tensor(bad_w) * scale if "values" in hostile else torch.tensor(w)
    state = {"w": torch.zeros(3) if "shape" in hostile else w_t, "b": torch.tensor(0.01)}
    stack = build_stack(build_config({}))
    stack.register_shards(_SHARDS)
    with no_hang():
        got = stack.aggregate_round(1, _G, {0: Update(state, count, metrics), **honest})
    assert all(bool(torch.isfinite(t).all()) and float(t.abs().max()) <= 1e6 for t in got.values())
    rejected = [r["client"] for r in stack.round_metrics(1)["rejected"]]
    honest_avg = weighted_average([u.state for u in honest.values()], [u.num_examples for u in honest.values()])
    if rejected:
        assert rejected == [0]
        assert all(float((got[k] - honest_avg[k]).abs().max()) <= 1e-6 for k in got)
        OUTCOMES["reply rejected"] += 1
    else:  # accepted: a plausible reply, counted with at most its registered shard's weight
        assert isinstance(count, int) and count > 0 and "train_loss" in metrics
        assert hostile <= {"count", "metrics", "values"}
        share = min(count, _SHARDS[0]) / (min(count, _SHARDS[0]) + 140)
        for k in got:
            mixed = (1 - share) * honest_avg[k].double() + share * state[k].double()
            assert float((got[k].double() - mixed).abs().max()) <= 1e-6
        OUTCOMES["reply accepted"] += 1


# -- refused values (issue 14): inf/nan, a bool for a number, a seed out of range, a key twice ----------


def _numeric_keys() -> list[tuple[str, str]]:
    """(dotted key, "scalar" | "list" | "dict") for every config key that holds numbers."""
    from federa.settings import _leaf_types

    found = []
    sections = [("", Config)] + [(f"{name}.", Config.model_fields[name].annotation) for name in _SECTIONS]
    for prefix, model in sections:
        for name, field in model.model_fields.items():
            kinds = _leaf_types(field.annotation)
            if bool in kinds or not kinds & {int, float}:
                continue
            shape = "dict" if dict in kinds else "list" if list in kinds else "scalar"
            found.append((prefix + name, shape))
    return found


_NUMERIC = _numeric_keys()


@settings(FUZZ, max_examples=80)
@given(key=st.sampled_from(_NUMERIC), bad=st.sampled_from([float("inf"), float("-inf"), float("nan"), True, False]),
       as_override=st.booleans())
def test_inf_nan_and_bools_are_refused_for_every_numeric_key(key, bad, as_override):
    CASES["refused-value"] += 1
    name, shape = key
    value = {"lora": bad} if shape == "dict" else [bad] if shape == "list" else bad
    text = {float("inf"): ".inf", float("-inf"): "-.inf", True: "true", False: "false"}.get(bad, ".nan")
    raw = f"{{lora: {text}}}" if shape == "dict" else f"[{text}]" if shape == "list" else text
    with pytest.raises(FederaError) as caught:
        if as_override:
            build_config({}, [f"{name}={raw}"])
        else:
            build_config(_nest([(name, value)]))
    _one_line(caught.value)
    assert name.rsplit(".", 1)[-1] in str(caught.value), (name, str(caught.value))


@settings(FUZZ, max_examples=30)
@given(key=st.sampled_from(["seed", "data.split_seed"]),
       seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32)))
def test_seeds_outside_0_to_2_32_are_refused(key, seed):
    from federa.compare.plan import parse_seeds

    CASES["refused-value"] += 1
    with pytest.raises(FederaError, match=key.replace(".", r"\.")) as caught:
        build_config({}, [f"{key}={seed}"])
    _one_line(caught.value)
    with pytest.raises(FederaError, match="--seeds must lie in 0..4294967295"):
        parse_seeds(f"0,{seed}")


@settings(FUZZ, max_examples=30)
@given(keys=st.lists(st.sampled_from([k for k in _KEYS if "." not in k]), min_size=1, max_size=5, unique=True),
       twice=st.integers(0, 4), nested=st.booleans())
def test_a_key_twice_anywhere_in_a_yaml_file_is_refused(keys, twice, nested, tmp_path_factory):
    CASES["refused-value"] += 1
    dup = keys[twice % len(keys)]
    lines = [f"{k}: 1" for k in keys] + [f"{dup}: 2"]
    if nested:  # the same rule inside a section
        lines = ["partition:"] + [f"  {line}" for line in lines]
    path = tmp_path_factory.mktemp("dup") / "c.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(FederaError) as caught:
        load_config(path)
    _one_line(caught.value)
    assert f"key '{dup}' appears twice (line {len(lines)}); keep one" in str(caught.value)


# -- damaged weight files (issue 14): cut or flipped, never past the model check as a traceback -------------


@settings(FUZZ, max_examples=40)
@given(damage=st.sampled_from(["cut", "flip"]), where=st.floats(0, 1, exclude_max=True), xor=st.integers(1, 255))
def test_damaged_model_weights_fail_in_one_line(damage, where, xor, tiny_model_dir, tmp_path_factory):
    import shutil

    from federa.pretrained import load_base_model, resolve_model_path
    from federa.tasks import task_class

    CASES["weights"] += 1
    folder = tmp_path_factory.mktemp("weights") / "model"
    shutil.copytree(tiny_model_dir, folder)
    data = bytearray((tiny_model_dir / "model.safetensors").read_bytes())  # (not an argument: hypothesis prints those)
    header_end = 8 + int.from_bytes(data[:8], "little")
    if damage == "cut":  # anywhere: in the header, between tensors, one byte short
        data = data[:int(where * len(data))]
    else:  # one byte of the header flipped: lengths, offsets, dtypes, names
        data[int(where * header_end)] ^= xor
    (folder / "model.safetensors").write_bytes(bytes(data))
    try:
        with no_hang():
            path = resolve_model_path(str(folder))
            load_base_model(task_class("classification")(build_config({}).data), path, ["a", "b"], 0)
    except FederaError as err:
        _one_line(err)
        OUTCOMES["weights refused"] += 1
        if damage == "cut":
            assert f"{folder / 'model.safetensors'} is truncated" in str(err)
        return
    assert damage == "flip"  # a cut file never loads
    OUTCOMES["weights loaded (a flip that left a valid file)"] += 1


# -- a full disk at any write (issue 14): the folder always resumes to the uninterrupted result ------------


@pytest.fixture(scope="module")
def disk_job(tiny_model_dir, small_csv):
    from federa.job import prepare_job

    return prepare_job(build_config({}, [
        f"model.path={tiny_model_dir}", f"data.path={small_csv}", "rounds=2", "num_clients=4", "clients_per_round=2",
        "local_steps=1", "batch_size=8", "max_length=32", "lora.r=2", "model.num_threads=1", "methods=lora"]))


@pytest.fixture(scope="module")
def disk_reference(disk_job, tmp_path_factory):
    """The uninterrupted run, and the files it fsyncs in order (each a write a full disk can fail)."""
    import os

    from federa.engines.inprocess import run_method
    from federa.results_dir import RunDir

    rd = RunDir(tmp_path_factory.mktemp("disk-ref"))
    real, names = os.fsync, []

    def counting(fd: int) -> None:
        p = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if p.is_file():
            names.append(p.name)
        real(fd)

    os.fsync = counting
    try:
        run_method(disk_job, "lora", rd, progress=False, log=lambda *_: None)
    finally:
        os.fsync = real
    return rd, names


@settings(FUZZ, max_examples=8)
@given(pick=st.floats(0, 1, exclude_max=True), cut_line=st.booleans())
def test_a_full_disk_at_any_write_resumes_to_the_same_result(pick, cut_line, disk_job, disk_reference,
                                                            tmp_path_factory, monkeypatch):
    import errno
    import os

    import torch

    from federa.checkpoint import load_checkpoint
    from federa.engines.inprocess import run_method
    from federa.results_dir import RunDir
    from full_disk import FullDisk

    CASES["disk-full"] += 1
    ref, names = disk_reference
    k = int(pick * len(names))
    name = names[k]
    full = FullDisk(name, names[:k + 1].count(name), cut_line and name == "metrics.jsonl")
    rd = RunDir(tmp_path_factory.mktemp("disk"))
    monkeypatch.setattr(os, "fsync", full)
    with no_hang(), pytest.raises(OSError) as caught:
        run_method(disk_job, "lora", rd, progress=False, log=lambda *_: None)
    monkeypatch.setattr(os, "fsync", full.real)
    assert caught.value.errno == errno.ENOSPC and not list(rd.root.rglob("*.tmp"))
    with no_hang():
        run_method(disk_job, "lora", rd, progress=False, log=lambda *_: None)
    got, want = load_checkpoint(rd.checkpoint("lora"))[0], load_checkpoint(ref.checkpoint("lora"))[0]
    assert got["round"] == want["round"] and all(torch.equal(got["state"][t], want["state"][t]) for t in want["state"])
    assert [r["round"] for r in rd.read_metrics()] == [r["round"] for r in ref.read_metrics()]
    assert [r["score"] for r in rd.read_metrics()] == [r["score"] for r in ref.read_metrics()]
    OUTCOMES[f"disk full at {name}"] += 1
