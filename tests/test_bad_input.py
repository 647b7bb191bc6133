"""Every bad input: a non-zero exit and one line that names the problem and the fix."""

import json
from pathlib import Path

import pytest

from federa.cli import EXIT_METHOD_FAILED, main


def _run(capsys, tiny_model_dir, small_csv, tmp_path, *sets, extra=()):
    args = ["run", "--no-progress", "--out", str(tmp_path / "out"), *extra,
            "--set", f"model.path={tiny_model_dir}", "--set", f"data.path={small_csv}",
            "--set", "rounds=1", "--set", "num_clients=4", "--set", "clients_per_round=2",
            "--set", "local_steps=1", "--set", "max_length=16", "--set", "lora.r=2"]
    for s in sets:
        args += ["--set", s]
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


CASES = [
    (["partiton.alpha=0.1"], r"unknown config key 'partiton'"),
    (["partition.alpa=0.1"], r"unknown config key 'partition.alpa'; known keys here: kind, alpha"),
    (["methods=federa,nope"], r"unknown method 'nope'; a method is .*base fft, lora, federa"),
    (["lora.r=0"], r"lora.r must be a positive integer, got 0"),
    (["lora.r=64"], r"lora.r=64 is larger than min\(out, in\)=32 of '.*query' \(32x32\); set lora.r<=32"),
    (["lora.target_modules=qkv"], r"'qkv' matches no Linear module in the model; available: .*query.*value"),
    (["model.path=/nonexistent/model"], r"model.path not found: /nonexistent/model; point model.path at"),
    (["data.path=/nonexistent/data.csv"], r"data.path not found: /nonexistent/data.csv"),
    (["data.label_column=category"], r"has no column 'category' \(set data.label_column\); available columns: text, label"),
    (["clients_per_round=9"], r"clients_per_round \(9\) > num_clients \(4\); set clients_per_round<=4"),
    (["num_clients=150", "clients_per_round=2", "partition.alpha=0.01"],
     r"could not give every client 1\+ examples.*raise partition.alpha, lower num_clients.*or try another seed"),
    (["rounds=0"], r"config key 'rounds': Input should be greater than or equal to 1"),
    # Issue 25: a KeyError traceback (and config.yaml left behind) before.
    (["data.text_column=label"], r"data.text_column and data.label_column both name the column 'label'"),
    (["data.label_column=text"], r"data.text_column and data.label_column both name the column 'text'"),
    # Issue 25: wrote outside the results root before.
    (["name=../../../escape"], r"name '../../../escape' must be one folder name"),
]


@pytest.mark.parametrize("sets,message", CASES, ids=[c[0][0].split("=")[0] for c in CASES])
def test_bad_input_is_one_clear_line(capsys, tiny_model_dir, small_csv, tmp_path, sets, message):
    code, err = _run(capsys, tiny_model_dir, small_csv, tmp_path, *sets)
    assert code == 2
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert __import__("re").search(message, lines[0]), lines[0]


def test_missing_config_file(capsys, tmp_path):
    assert main(["run", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_non_empty_output_folder_is_refused(capsys, tiny_model_dir, small_csv, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("finished work")
    code, err = _run(capsys, tiny_model_dir, small_csv, tmp_path)
    assert code == 2 and "is not empty" in err and "--resume" in err
    assert (tmp_path / "out" / "keep.txt").read_text() == "finished work"


def test_nan_loss_stops_that_method_only(capsys, tiny_model_dir, small_csv, tmp_path):
    # An absurd learning rate overflows the weights; lora must stop, federa must still run.
    code, err = _run(capsys, tiny_model_dir, small_csv, tmp_path, "methods=lora,federa", "lr.lora=1e30",
                     "rounds=2", "local_steps=3")
    assert code == EXIT_METHOD_FAILED
    assert "did not finish" in err and "Traceback" not in err
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"]["lora"]["status"] == "failed"
    assert "loss became" in summary["methods"]["lora"]["reason"]
    assert summary["methods"]["federa"]["status"] == "done"
    rounds = [(r["method"], r["round"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert ("lora", 0) in rounds and ("federa", 2) in rounds  # lora's finished rounds are kept


def test_resume_refuses_data_that_now_split_differently(capsys, tiny_model_dir, small_csv, tmp_path):
    code, _ = _run(capsys, tiny_model_dir, small_csv, tmp_path, "methods=lora")
    assert code == 0
    out = tmp_path / "out"
    part = json.loads((out / "partition.json").read_text())
    part["clients"][0]["indices"], part["clients"][1]["indices"] = part["clients"][1]["indices"], part["clients"][0]["indices"]
    (out / "partition.json").write_text(json.dumps(part))
    (out / "lora" / "result.json").unlink()  # so that resuming has work to do
    assert main(["run", "--resume", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "split differently" in err and len(err.splitlines()) == 1


# -- found by the hostile-user pass (issue 14, section 4): each printed a traceback before ----------


def test_max_length_above_the_models_positions(capsys, tiny_model_dir, small_csv, tmp_path):
    code, err = _run(capsys, tiny_model_dir, small_csv, tmp_path, "max_length=512")
    assert code == 2 and err == (f"error: max_length=512 is above what the model at {tiny_model_dir} can read "
                                 "(128 positions); set max_length<=128")


@pytest.mark.parametrize("content, words", [
    ("{}", "config.json has no model_type"),
    ('{"model_typ', "config.json is not valid JSON"),
])
def test_garbled_model_config(capsys, tiny_model_dir, small_csv, tmp_path, content, words):
    import shutil

    bad = tmp_path / "model"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "config.json").write_text(content)
    code, err = _run(capsys, tiny_model_dir, small_csv, tmp_path, f"model.path={bad}")
    assert code == 2 and len(err.splitlines()) == 1 and words in err and "restore the model's config.json" in err


def test_latin1_csv_names_the_encoding(capsys, tiny_model_dir, small_csv, tmp_path):
    data = tmp_path / "latin.csv"
    data.write_bytes(b"text,label\n" + b"".join(b"caf\xe9 %d,%s\n" % (i, b"ab"[i % 2:i % 2 + 1]) for i in range(40)))
    code, err = _run(capsys, tiny_model_dir, small_csv, tmp_path, f"data.path={data}")
    assert code == 2 and err == (f"error: data.path {data} is not UTF-8 text (byte 0xe9 at offset 14); re-save it "
                                 "as UTF-8, e.g. `iconv -f latin1 -t utf-8 latin.csv > fixed.csv`")


def test_an_empty_test_split(capsys, tiny_model_dir, small_csv, tmp_path):
    from datasets import Dataset, DatasetDict

    rows = {"text": ["good news", "bad news"] * 10, "label": [0, 1] * 10}
    folder = tmp_path / "saved"
    DatasetDict({"train": Dataset.from_dict(rows), "test": Dataset.from_dict({"text": [], "label": []})}).save_to_disk(folder)
    code, err = _run(capsys, tiny_model_dir, small_csv, tmp_path, f"data.path={folder}", "num_clients=2")
    assert code == 2 and err == f"error: data.path {folder}: split(s) test have no rows; give them labelled rows, or save without an empty test split so federa carves data.test_size of train"


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_out_that_is_or_lies_under_a_file(capsys, tiny_model_dir, small_csv, tmp_path, where):
    f = tmp_path / "afile"
    f.write_text("x")
    out = f if where == "file" else f / "sub"
    code = main(["run", "--out", str(out), "--set", f"model.path={tiny_model_dir}", "--set", f"data.path={small_csv}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"error: --out {out} ")
    assert ("is a file, not a folder" if where == "file" else f"lies under {f}, which is a file") in err


def test_report_on_a_folder_that_is_not_a_run(capsys, tmp_path):
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path} is not a federa results folder (no config.yaml); "
                                               "pass a folder written by `federa run` or `federa compare`")


def test_report_with_corrupt_result_and_summary(capsys, tiny_model_dir, small_csv, tmp_path):
    code, _ = _run(capsys, tiny_model_dir, small_csv, tmp_path, "methods=lora")
    out = tmp_path / "out"
    assert code == 0
    (out / "summary.json").write_text("{garbled")
    assert main(["report", str(out)]) == 0  # summary.json is rebuilt from metrics and results
    assert "is corrupt; rebuilding it" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["methods"]["lora"]["status"] == "done"
    (out / "lora" / "result.json").write_text("{garbled")
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {out / 'lora' / 'result.json'} is corrupt (not JSON); delete it and "
                   f"`federa run --resume {out}` rewrites it from the method's last checkpoint")


@pytest.mark.parametrize("sets, message", [
    (["rounds=true"], "'rounds' must be a number, got true"),
    (["lora.alpha=.inf"], "config key 'lora.alpha': Input should be a finite number"),
    (["weight_decay=.inf"], "config key 'weight_decay': Input should be a finite number"),
    (["lr.lora=.nan"], "config key 'lr.lora': Input should be a finite number"),
    (["partition.alpha=.inf"], "config key 'partition.alpha': Input should be a finite number"),
    (["seed=-1"], "config key 'seed': Input should be greater than or equal to 0"),
    (["data.split_seed=-1"], "config key 'data.split_seed': Input should be greater than or equal to 0"),
])
def test_values_that_used_to_train_or_fail_late(capsys, tiny_model_dir, small_csv, tmp_path, sets, message):
    """Before: .inf trained a NaN model, true was taken as 1, seed -1 was misreported as a partition failure."""
    code, err = _run(capsys, tiny_model_dir, small_csv, tmp_path, *sets)
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_a_key_twice_in_a_yaml_file(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rounds: 3\nseed: 1\nrounds: 4\n")
    assert main(["run", "--config", str(cfg)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: config file {cfg} is not valid YAML: key 'rounds' appears "
                                               "twice (line 3); keep one")


def test_compare_refuses_a_negative_seed(capsys, tmp_path):
    assert main(["compare", "--seeds=-1", "--out", str(tmp_path / "c")]) == 2
    assert "--seeds must lie in 0..4294967295" in capsys.readouterr().err


# -- damaged weight files (issue 14): one line naming the file, never safetensors' traceback -------


@pytest.mark.parametrize("keep", [0.5, 10, 0], ids=["half", "10_bytes", "empty"])
def test_truncated_model_weights(capsys, tiny_model_dir, small_csv, tmp_path, keep):
    import shutil

    bad = tmp_path / "model"
    shutil.copytree(tiny_model_dir, bad)
    weights = bad / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
    code, err = _run(capsys, tiny_model_dir, small_csv, tmp_path, f"model.path={bad}")
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: model.path {bad}: {weights} is truncated (")
    assert err.endswith("copy the model's weight files again from where they came from")
    assert not (tmp_path / "out").exists()


def test_a_flipped_byte_in_a_final_model_is_caught_by_its_checksum(capsys, tiny_model_dir, small_csv, tmp_path):
    import json

    import federa
    from federa import writer_lock
    from federa.errors import ModelError

    code, _ = _run(capsys, tiny_model_dir, small_csv, tmp_path, "methods=lora")
    assert code == 0
    out = tmp_path / "out"
    writer_lock.release(out)
    final = out / "lora" / "final"
    sums = json.loads((final / "checksums.json").read_text())["sha256"]
    assert "adapter_model.safetensors" in sums and "base" not in sums  # the linked base is not federa's file
    assert federa.load_model(out, "lora") is not None  # intact: loads
    adapter = final / "adapter_model.safetensors"
    raw = bytearray(adapter.read_bytes())
    raw[-5] ^= 0x01  # one bit of one tensor: the header and the size still read right
    adapter.write_bytes(bytes(raw))
    from federa.weight_files import weights_problem

    assert weights_problem(final) is None  # the size checks cannot see it
    with pytest.raises(ModelError) as caught:
        federa.load_model(out, "lora")
    msg = str(caught.value)
    assert "\n" not in msg and msg.startswith(f"{adapter} has changed since the run saved it (its SHA-256 differs")
    assert msg.endswith("saves the final model again from the method's last checkpoint")


def test_truncated_final_model_names_the_file_and_resume_saves_it_again(capsys, tiny_model_dir, small_csv, tmp_path):
    import federa
    from federa import writer_lock
    from federa.errors import ModelError

    code, _ = _run(capsys, tiny_model_dir, small_csv, tmp_path, "methods=lora")
    out = tmp_path / "out"
    assert code == 0
    writer_lock.release(out)
    adapter = out / "lora" / "final" / "adapter_model.safetensors"
    size = adapter.stat().st_size
    adapter.write_bytes(adapter.read_bytes()[:size - 100])  # e.g. copied onto a disk that filled up
    with pytest.raises(ModelError) as caught:
        federa.load_model(out, "lora")
    msg = str(caught.value)
    assert "\n" not in msg and msg.startswith(f"{adapter} is truncated ({size - 100} of the {size} bytes its header describes)")
    assert msg.endswith(f"delete {out / 'lora' / 'final'} and {out / 'lora' / 'result.json'}, then "
                        f"`federa run --resume {out}` saves the final model again from the method's last checkpoint")
    import shutil

    shutil.rmtree(out / "lora" / "final")
    (out / "lora" / "result.json").unlink()
    assert main(["run", "--resume", str(out), "--no-progress"]) == 0
    writer_lock.release(out)
    assert federa.load_model(out, "lora") is not None


# -- issue 25 -------------------------------------------------------------------------------------


def test_a_config_json_that_does_not_fit_the_weights_names_the_tensor(capsys, tiny_model_dir, small_csv, tmp_path):
    """Before: config.json saying only {"model_type": "bert"} over the 32-wide weights trained a randomly
    initialised 768-wide BERT (ignore_mismatched_sizes) and exited 0."""
    import shutil

    bad = tmp_path / "model"
    shutil.copytree(tiny_model_dir, bad)
    (bad / "config.json").write_text('{"model_type": "bert"}')
    code, err = _run(capsys, tiny_model_dir, small_csv, tmp_path, f"model.path={bad}", "methods=lora")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: model.path {bad}: weight bert.embeddings.") and "(32,) in the files" in err \
        and "(768,)" in err and "restore the model's own config.json" in err, err
    assert not (tmp_path / "out").exists()  # nothing left behind


def test_a_backbone_weight_missing_from_the_files_is_one_line(capsys, tiny_model_dir, small_csv, tmp_path):
    """Before: a layer absent from the weight files was silently left at its random start."""
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "model"
    shutil.copytree(tiny_model_dir, bad)
    weights = load_file(bad / "model.safetensors")
    kept = {k: v for k, v in weights.items() if ".layer.1." not in k}
    assert len(kept) < len(weights)
    save_file(kept, bad / "model.safetensors", metadata={"format": "pt"})
    code, err = _run(capsys, tiny_model_dir, small_csv, tmp_path, f"model.path={bad}", "methods=lora")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"model.path {bad}: weight bert.encoder.layer.1." in err and "more is missing from the files" in err, err


def test_name_never_leaves_the_runs_folder(capsys, tiny_model_dir, small_csv, tmp_path, monkeypatch):
    """Before: `--set name=../../escape` with no --out wrote runs/<time>-../../escape, outside runs/."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    code = main(["run", "--no-progress", "--set", "name=../../escape", "--set", f"model.path={tiny_model_dir}",
                 "--set", f"data.path={small_csv}", "--set", "methods=lora", "--set", "rounds=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: config key 'name': name '../../escape' must be one folder name"), err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == [Path("a"), Path("a/b")]


def test_report_names_a_hand_edited_metrics_line(capsys, tiny_model_dir, small_csv, tmp_path):
    """Before: `"round": "one"` in metrics.jsonl gave a TypeError traceback from `federa report`."""
    code, _ = _run(capsys, tiny_model_dir, small_csv, tmp_path, "methods=lora")
    assert code == 0
    metrics = tmp_path / "out" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    assert len(lines) == 2
    lines[1] = lines[1].replace('"round": 1', '"round": "one"')
    metrics.write_text("\n".join(lines) + "\n")
    assert main(["report", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f'error: {metrics} line 2: \'round\' is "one", not a round number (0, 1, 2, ...); fix or delete '
                   "that line (federa wrote it as one JSON object per evaluated round)"), err
    lines[1] = lines[1].replace('"round": "one"', '"round": 1').replace('"score": ', '"score": "high", "x": ')
    metrics.write_text("\n".join(lines) + "\n")
    assert main(["report", str(tmp_path / "out")]) == 2
    assert "line 2: 'score' is \"high\", not a number" in capsys.readouterr().err


def test_per_client_scores_are_a_list_in_a_metrics_line():
    """`client_score` holds one score per client (None where unscored): a valid line, not a bad number."""
    from federa.results_dir import record_problem

    line = {"method": "lora", "round": 1, "score": 0.5, "client_score": [0.2, None, 0.3333333333333333]}
    assert record_problem(line) is None
    assert record_problem({**line, "client_score": [0.2, "x"]}) == "'client_score' is [0.2, \"x\"], not a list of numbers"
