"""MLflow: one MLflow run per federa run, with a nested run per method holding its per-round metrics.

By default the store is a SQLite file in the results folder (``<run>/mlflow.db``, artifacts in
``<run>/mlflow-artifacts``): nothing leaves the machine, and ``mlflow ui --backend-store-uri
sqlite:///<run>/mlflow.db`` shows it. ``mlflow.tracking_uri`` sends it to a server instead. Uses
MLflow's explicit client API (no process-wide active run). Needs ``pip install 'federa[mlflow]'``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field

from federa.fingerprint import flatten
from federa.settings import Section
from federa.trackers.base import Tracker

_STATUS = {"done": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}


class MlflowSettings(Section):
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; None: sqlite:///<run folder>/mlflow.db.")
    experiment: str = Field("federa", description="MLflow experiment the run goes to.")


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        import logging

        from mlflow.tracking import MlflowClient

        # MLflow announces creating its tables at INFO; federa's own output is what matters here.
        for noisy in ("mlflow.store.db.utils", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        s = self.cfg.mlflow
        local = s.tracking_uri is None
        uri = f"sqlite:///{(self.run_dir.root / 'mlflow.db').resolve()}" if local else s.tracking_uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(s.experiment)
        if exp is not None:
            exp_id = exp.experiment_id
        else:
            where = (self.run_dir.root / "mlflow-artifacts").resolve().as_uri() if local else None
            exp_id = self.client.create_experiment(s.experiment, artifact_location=where)
        if self.saved.get("run_id"):
            self.run_id = self.saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(exp_id, run_name=self.title, tags={"federa.run_dir": str(self.run_dir.root)}).info.run_id
        self.exp_id = exp_id
        self.children: dict[str, str] = dict(self.saved.get("children", {}))

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "children": self.children}

    def _child(self, method: str) -> str:
        if method not in self.children:
            run = self.client.create_run(self.exp_id, run_name=method, tags={"mlflow.parentRunId": self.run_id,
                                                                             "federa.method": method})
            self.children[method] = run.info.run_id
        return self.children[method]

    def start(self, config: dict[str, Any], info: dict[str, Any], partition: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param

        params = {k: str(v)[:6000] for k, v in flatten(config).items()}  # MLflow's limit on a param value
        items = list(params.items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i:i + 100]])
        self.client.log_dict(self.run_id, config, "config.yaml")
        self.client.log_dict(self.run_id, info, "run.json")
        self.client.log_dict(self.run_id, partition, "partition.json")
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric("partition.label_skew_tv", partition["label_skew_tv"], now, 0)]
                              + [Metric("partition.client_examples", c["num_examples"], now, c["id"])
                                 for c in partition["clients"]])

    def log_round(self, method: str, rnd: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self._child(method), metrics=[Metric(k, v, now, rnd) for k, v in values.items()])

    def finish(self, summary: dict[str, Any], report: Path, plots: list[Path]) -> None:
        from mlflow.entities import Metric

        for p in plots:
            self.client.log_artifact(self.run_id, str(p), "plots")
        if report.is_file():
            self.client.log_artifact(self.run_id, str(report))
        now = int(time.time() * 1000)
        for m, s in summary.get("methods", {}).items():
            values = {k: float(v) for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.client.log_batch(self._child(m), metrics=[Metric(f"summary.{k}", v, now, 0) for k, v in values.items()])

    def close(self, status: str) -> None:
        for run_id in (*self.children.values(), self.run_id):
            self.client.set_terminated(run_id, status=_STATUS.get(status, "FINISHED"))
