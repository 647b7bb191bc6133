"""Every bad input: a non-zero exit and one line that names the problem and the fix."""

import json

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
    (["methods=federa,nope"], r"unknown method 'nope'; choose from fft, lora, federa"),
    (["lora.r=0"], r"lora.r must be a positive integer, got 0"),
    (["lora.r=64"], r"lora.r=64 is larger than min\(out, in\)=32 of '.*query' \(32x32\); set lora.r<=32"),
    (["lora.target_modules=qkv"], r"'qkv' matches no Linear module in the model; available: .*query.*value"),
    (["model.path=/nonexistent/model"], r"model.path not found: /nonexistent/model; point model.path at"),
    (["data.path=/nonexistent/data.csv"], r"data.path not found: /nonexistent/data.csv"),
    (["data.label_column=category"], r"has no column 'category' \(set data.label_column\); available columns: text, label"),
    (["clients_per_round=9"], r"clients_per_round \(9\) > num_clients \(4\); set clients_per_round<=4"),
    (["num_clients=150", "clients_per_round=2", "partition.alpha=0.01"],
     r"could not give every client 1\+ examples.*raise partition.alpha or lower num_clients"),
    (["rounds=0"], r"config key 'rounds': Input should be greater than or equal to 1"),
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
