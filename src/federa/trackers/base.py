"""Trackers: the run as TensorBoard, MLflow or Weights & Biases see it.

A :class:`Tracker` gets the config, the run facts and the partition statistics at the start,
every metrics record (one per evaluated round and method) as it is written, and the summary,
the report and the plots at the end. :class:`Trackers` feeds every configured tracker from the
run's events and remembers in ``trackers.json`` what each has been sent, so a resumed run
continues the same tracker runs without sending a round twice.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federa.events import Events, Log

if TYPE_CHECKING:
    from federa.results_dir import RunDir  # its module loads torch; the config imports this one's settings

STATE_FILE = "trackers.json"


def numeric(record: Mapping[str, Any]) -> dict[str, float]:
    """The plottable values of a metrics record (lists such as ``clients``, and None, dropped)."""
    return {k: float(v) for k, v in record.items()
            if k not in ("method", "round") and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker(ABC):
    name: str

    def __init__(self, cfg: Any, run_dir: RunDir, title: str, saved: dict[str, Any]) -> None:
        """``saved``: what :meth:`state` returned in an earlier session of this run ({} for a new one)."""
        self.cfg, self.run_dir, self.title, self.saved = cfg, run_dir, title, saved

    @abstractmethod
    def start(self, config: dict[str, Any], info: dict[str, Any], partition: dict[str, Any]) -> None:
        """A new run: log its config, facts and client partition (not called again on resume)."""

    @abstractmethod
    def log_round(self, method: str, rnd: int, values: dict[str, float]) -> None: ...

    @abstractmethod
    def finish(self, summary: dict[str, Any], report: Path, plots: list[Path]) -> None:
        """The run's summary, report.md and plots (after every method, on each session's end)."""

    @abstractmethod
    def close(self, status: str) -> None:
        """``status``: done, interrupted or failed."""

    def state(self) -> dict[str, Any]:
        """What resuming needs (run ids), saved in trackers.json."""
        return {}


class Trackers(Events):
    """Every configured tracker, fed from the run's events; one failing tracker is dropped with a
    warning instead of stopping the training it only watches."""

    def __init__(self, cfg: Any, run_dir: RunDir, title: str, log: Log) -> None:
        from federa.trackers import tracker_class

        self.run_dir, self.log = run_dir, log
        path = run_dir.root / STATE_FILE
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        self.resumed = bool(saved)
        self.sent: dict[str, int] = saved.get("sent", {})  # method → last round sent
        self.trackers: list[Tracker] = []
        for n in cfg.trackers:
            try:
                self.trackers.append(tracker_class(n)(cfg, run_dir, title, saved.get(n, {})))
            except Exception as err:  # noqa: BLE001 - e.g. a tracking server that does not answer
                self._warn(n, err)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def _each(self, what: str, *args: Any) -> None:
        for t in list(self.trackers):
            try:
                getattr(t, what)(*args)
            except Exception as err:  # noqa: BLE001 - a side channel must not end the run
                self._warn(t.name, err)
                self.trackers.remove(t)

    def _warn(self, name: str, err: Exception) -> None:
        first = str(err).splitlines()[0] if str(err) else ""
        self.log(f"warning: tracker {name} failed ({type(err).__name__}: {first}); it logs nothing more this run")

    def _save(self) -> None:
        if not self.trackers:
            return  # no trackers.json in a run without any
        state = {"sent": self.sent, **{t.name: t.state() for t in self.trackers}}
        self.run_dir.write_json(self.run_dir.root / STATE_FILE, state)

    def start(self, config: dict[str, Any], info: dict[str, Any], partition: dict[str, Any]) -> None:
        if not self.resumed:
            self._each("start", config, info, partition)
        self._save()

    def send(self, record: Mapping[str, Any]) -> None:
        m, rnd = record["method"], int(record["round"])
        if rnd <= self.sent.get(m, -1):
            return
        self._each("log_round", m, rnd, numeric(record))
        self.sent[m] = rnd
        self._save()

    def sync(self) -> None:
        """Send every record of metrics.jsonl not sent yet (rounds run in another process: Flower)."""
        for record in self.run_dir.read_metrics():
            self.send(record)

    def finish(self, summary: dict[str, Any]) -> None:
        self.sync()
        plots = sorted(self.run_dir.root.glob("*.png"))
        self._each("finish", summary, self.run_dir.report, plots)

    def close(self, status: str) -> None:
        self._each("close", status)
        if self.trackers:
            self._save()

    # -- events --------------------------------------------------------------------------

    def method_start(self, *_: Any) -> None:
        self.sync()  # round 0, written when the method's server was built

    def round_end(self, rnd: int, record: Mapping[str, Any], postfix: Mapping[str, str]) -> None:
        if record:
            self.send(record)

    def method_end(self, method: str, result: Mapping[str, Any] | None) -> None:
        self.sync()
