"""Weights & Biases: one W&B run per federa run; each method's metrics under ``<method>/``, each
against its own ``<method>/round`` axis (methods run one after another, each from round 0).

Offline unless ``WANDB_API_KEY`` (or ``wandb.mode: online``) says otherwise: the run is kept in
``<run>/wandb/`` and ``wandb sync`` uploads it later. Needs ``pip install 'federa[wandb]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from federa.settings import Section
from federa.trackers.base import Tracker


class WandbSettings(Section):
    project: str = Field("federa", description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (team or user); None: your default.")
    mode: Literal["auto", "online", "offline"] = Field(
        "auto", description="auto: online when WANDB_API_KEY is set (or WANDB_MODE says so), else offline.")


def resolve_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE") in ("online", "offline"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        import wandb

        s = self.cfg.wandb
        self.run = wandb.init(
            project=s.project, entity=s.entity, name=self.title, dir=str(self.run_dir.root), mode=resolve_mode(s.mode),
            id=self.saved.get("id"), resume="allow" if self.saved.get("id") else None,
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        self._defined: set[str] = set()

    def state(self) -> dict[str, Any]:
        return {"id": self.run.id}

    def start(self, config: dict[str, Any], info: dict[str, Any], partition: dict[str, Any]) -> None:
        import wandb

        self.run.config.update({**config, "run": info}, allow_val_change=True)
        names = partition["label_names"]
        table = wandb.Table(columns=["client", "examples", *names],
                            data=[[c["id"], c["num_examples"], *c["label_counts"]] for c in partition["clients"]])
        self.run.log({"partition/clients": table})
        self.run.summary["partition/label_skew_tv"] = partition["label_skew_tv"]

    def log_round(self, method: str, rnd: int, values: dict[str, float]) -> None:
        if method not in self._defined:
            self.run.define_metric(f"{method}/round")
            self.run.define_metric(f"{method}/*", step_metric=f"{method}/round")
            self._defined.add(method)
        self.run.log({f"{method}/round": rnd, **{f"{method}/{k}": v for k, v in values.items()}})

    def finish(self, summary: dict[str, Any], report: Path, plots: list[Path]) -> None:
        import wandb

        if plots:
            self.run.log({f"plots/{p.stem}": wandb.Image(str(p)) for p in plots})
        for m, s in summary.get("methods", {}).items():
            for k, v in s.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.run.summary[f"{m}/{k}"] = v

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "done" else 1)
