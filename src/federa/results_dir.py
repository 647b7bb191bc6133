"""The results folder of one run: where each file lives, the append-only metrics log, and opening
one for a new run or a resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federa.checkpoint import atomic_write_bytes
from federa.errors import ConfigError, DataError

if TYPE_CHECKING:
    from federa.config import Config


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def partition(self) -> Path:
        return self.root / "partition.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    def method_dir(self, method: str) -> Path:
        return self.root / method

    def checkpoint(self, method: str) -> Path:
        return self.method_dir(method) / "checkpoint.pt"

    def result(self, method: str) -> Path:
        """Written last, when a method has finished (or failed): its presence means 'done'."""
        return self.method_dir(method) / "result.json"

    def final_model(self, method: str) -> Path:
        return self.method_dir(method) / "final"

    def drop_resume_files(self, method: str, final_too: bool = False) -> None:
        """Delete what only a resume needed once ``method`` finished ("done"): its checkpoint and the
        one before it (an FFT checkpoint holds the whole model), and with ``final_too`` its final model
        (a run kept only for its scores). Anything unfinished, failed or stopped keeps them, so it can
        still resume."""
        try:
            done = json.loads(self.result(method).read_text(encoding="utf-8")).get("status") == "done"
        except (OSError, json.JSONDecodeError):  # no result yet (unfinished), or one cut by a crash
            return
        if done:
            ckpt = self.checkpoint(method)
            for path in (ckpt, ckpt.with_name(ckpt.name + ".prev")):
                path.unlink(missing_ok=True)
            if final_too:
                shutil.rmtree(self.final_model(method), ignore_errors=True)

    # -- metrics.jsonl -------------------------------------------------------------------

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one line and fsync, so a crash never loses an evaluated round."""
        with open(self.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every whole line; a line of the wrong shape (edited by hand) is one DataError naming it."""
        if not self.metrics.exists():
            return []
        out = []
        for n, line in enumerate(self.metrics.read_text(encoding="utf-8").splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write
            if (why := record_problem(record)) is not None:
                raise DataError(f"{self.metrics} line {n}: {why}; fix or delete that line (federa wrote it "
                                "as one JSON object per evaluated round)")
            out.append(record)
        return out

    def rewrite_metrics(self, records: Iterable[dict[str, Any]]) -> None:
        atomic_write_bytes(self.metrics, "".join(json.dumps(r) + "\n" for r in records).encode())

    def write_json(self, path: Path, obj: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


# What reports, plots and resume read from metrics lines as numbers (bool is not one), wherever
# present. Other keys are passed through as they are.
_NUMBER_KEYS = ("score", "cum_train_wall_s", "cum_client_compute_s", "cum_wall_s", "cum_bytes_up",
                "cum_bytes_down", "cum_examples_seen", "cum_modelled_s")
_OPTIONAL_NUMBER_KEYS = ("loss", "macro_f1", "round_s", "lora_agg_error", "update_norm")
_NUMBER_LIST_KEYS = ("client_score",)  # one entry per client id, None for a client that was not scored


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def record_problem(record: Any) -> str | None:
    """Why one parsed metrics line cannot be a round's record, or None."""
    if not isinstance(record, dict):
        return f"holds {type(record).__name__}, not an object"
    if not isinstance(record.get("method"), str):
        return f"'method' is {json.dumps(record.get('method'))}, not a method name"
    rnd = record.get("round")
    if not (isinstance(rnd, int) and not isinstance(rnd, bool) and rnd >= 0):
        return f"'round' is {json.dumps(rnd)}, not a round number (0, 1, 2, ...)"
    for key in _NUMBER_KEYS:
        if key in record and not _is_number(record[key]):
            return f"'{key}' is {json.dumps(record[key])}, not a number"
    for key in _OPTIONAL_NUMBER_KEYS:  # may be null (not measured that round)
        if record.get(key) is not None and not _is_number(record[key]):
            return f"'{key}' is {json.dumps(record[key])}, not a number"
    for key in _NUMBER_LIST_KEYS:
        value = record.get(key)
        if value is not None and not (isinstance(value, list) and all(v is None or _is_number(v) for v in value)):
            return f"'{key}' is {json.dumps(value)}, not a list of numbers"
    return None


def run_name(cfg: Config) -> str:
    """The run's title and folder name: ``name`` when set, else the data source's name (a file's
    stem, a hub dataset, a built-in other than the default), else ``default``."""
    if cfg.name != "default":
        return cfg.name
    d = cfg.data
    if d.path is not None:
        source = Path(d.path)
        name = source.stem if source.suffix else source.name
    elif d.hub is not None:
        name = d.hub.rsplit("/", 1)[-1] + (f"-{d.hub_config}" if d.hub_config else "")
    elif d.builtin != type(d)().builtin:
        name = d.builtin
    else:
        return cfg.name
    # A folder name: keep it to letters, digits and - _ . so any shell can type it.
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return safe or cfg.name


def default_run_dir(cfg: Config, root: str | Path = "runs") -> Path:
    return Path(root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{run_name(cfg)}"


def out_problem(out: Path) -> str | None:
    """Why ``out`` cannot hold a results folder (a file, under a file, not writable), or None."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a folder; pass a folder path"
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"--out {out} lies under {parent}, which is a file; pass a folder path"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--out {out}: {parent} is not writable by this user; pass a folder you can write to"
    return None


def _has_content(root: Path) -> bool:
    from federa.writer_lock import LOCK_NAME

    return any(p.name != LOCK_NAME for p in root.iterdir())


def open_run_dir(cfg: Config, out: Path, resume: bool, allow_changed: Sequence[str] = (),
                 role: str = "federa run", log=print) -> RunDir:
    """Create ``out`` for a fresh run, or check it belongs to ``cfg`` when resuming.

    Either way this process then holds the folder's writer lock (:mod:`federa.writer_lock`) until
    it exits or calls ``writer_lock.release(out)``: a second writer is refused in one line. A
    resume refuses a config that differs from the one the run started with
    (:mod:`federa.fingerprint`), except in the keys of ``allow_changed``.
    """
    from federa import fingerprint, writer_lock

    if (why := out_problem(out)) is not None:
        raise ConfigError(why)
    run_dir = RunDir(out)
    if resume:
        if not run_dir.config.is_file():
            raise ConfigError(f"--resume {out}: no config.yaml there; pass the folder of an earlier run")
        writer_lock.acquire(out, role)
        try:
            fingerprint.check_resume(run_dir, cfg, allow_changed, log=log)
        except BaseException:
            writer_lock.release(out)
            raise
        return run_dir
    if out.exists() and _has_content(out):
        raise ConfigError(f"output folder {out} is not empty; pass a new --out, or --resume {out} to continue it")
    out.mkdir(parents=True, exist_ok=True)
    writer_lock.acquire(out, role)
    if _has_content(out):  # another writer created it between our check and our lock
        writer_lock.release(out)
        raise ConfigError(f"output folder {out} is not empty; pass a new --out, or --resume {out} to continue it")
    atomic_write_bytes(run_dir.config, cfg.to_yaml().encode("utf-8"))
    fingerprint.save(run_dir, cfg)
    return run_dir


def discard_unstarted(run_dir: RunDir, created_root: bool) -> bool:
    """After an error in a fresh run: remove what it wrote if no round was saved yet; True if removed.

    An error found after the folder was opened (too many clients for the data, a rank too
    large for the model, a bad data file) would otherwise leave config.yaml, partition.json and
    metrics behind, so the fixed command is refused as "not empty" and ``--resume`` reuses the
    bad config. A folder holding a checkpoint or a result keeps everything: that is finished
    work, resumable.
    """
    import shutil

    from federa import writer_lock

    root = run_dir.root
    if not root.is_dir() or any(root.glob("*/checkpoint.pt*")) or any(root.glob("*/result.json")):
        return False
    for p in root.iterdir():
        if p.name != writer_lock.LOCK_NAME:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    if created_root:
        writer_lock.release(root)
        if not writer_lock.is_held(root):
            shutil.rmtree(root, ignore_errors=True)
    return True
