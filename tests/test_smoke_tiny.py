from federa.engines.inprocess import run_method
from federa.job import prepare_job
from federa.results_dir import RunDir


def test_tiny_run_writes_metrics(tiny_cfg, tmp_path):
    cfg = tiny_cfg("methods=lora")
    job = prepare_job(cfg)
    rd = RunDir(tmp_path)
    result = run_method(job, "lora", rd, progress=False, log=lambda *_: None)
    assert result["status"] == "done"
    rounds = [r["round"] for r in rd.read_metrics()]
    assert rounds == [0, 1, 2]
