"""A cell's job: the shared data re-partitioned for the cell, and one method's lr set on it."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from federa.config import Config, build_config

if TYPE_CHECKING:
    from federa.job import Job


def cell_job(base: Job, cfg: Config) -> tuple[Job, int]:
    """``base`` re-partitioned for ``cfg`` (cells differ only in partition and seed, never in data),
    and which Dirichlet draw made the partition (0 unless ``partition.redraws`` was needed)."""
    from datasets import Dataset

    from federa.partition import carve_client_val, client_val_fraction, partition_with_draw

    # By the task's strata, as prepare_job does (labels for classification, bins for regression).
    parts, draw = partition_with_draw(Dataset.from_dict({"label": base.strata}), cfg.partition, cfg.num_clients,
                                      cfg.seed)
    parts, val_parts = carve_client_val(parts, client_val_fraction(cfg), cfg.seed)
    return replace(base, cfg=cfg, parts=parts, val_parts=val_parts), draw


def with_lr(job: Job, method: str, lr: float | None) -> Job:
    if lr is None:
        return job
    raw = job.cfg.model_dump(mode="json")
    raw["lr"] = {**raw["lr"], method: lr}
    return replace(job, cfg=build_config(raw))
