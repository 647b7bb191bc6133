"""TensorBoard: ``<run>/tensorboard/`` holds the run (config, partition, plots, report) and one
sub-folder per method with its per-round scalars, so TensorBoard overlays the methods.

``tensorboard --logdir <run>/tensorboard`` shows them. Written with
``torch.utils.tensorboard.SummaryWriter`` (needs ``pip install 'federa[tensorboard]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from federa.trackers.base import Tracker


def _code(text: str) -> str:
    # TensorBoard renders text as markdown: indent so tables and YAML keep their layout.
    return "\n".join("    " + line for line in text.splitlines())


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.root = self.run_dir.root / "tensorboard"
        self._writers: dict[str, Any] = {}

    def _writer(self, sub: str = "") -> Any:
        if sub not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[sub] = SummaryWriter(log_dir=str(self.root / sub) if sub else str(self.root))
        return self._writers[sub]

    def start(self, config: dict[str, Any], info: dict[str, Any], partition: dict[str, Any]) -> None:
        from federa.partition import format_stats

        w = self._writer()
        w.add_text("config", _code(yaml.safe_dump(config, sort_keys=False)))
        w.add_text("run", _code(yaml.safe_dump(info, sort_keys=False)))
        w.add_text("partition", _code(format_stats(partition)))
        w.add_scalar("partition/label_skew_tv", partition["label_skew_tv"], 0)
        for c in partition["clients"]:
            w.add_scalar("partition/client_examples", c["num_examples"], c["id"])
        w.flush()

    def log_round(self, method: str, rnd: int, values: dict[str, float]) -> None:
        w = self._writer(method)
        for k, v in values.items():
            w.add_scalar(k, v, rnd)
        w.flush()

    def finish(self, summary: dict[str, Any], report: Path, plots: list[Path]) -> None:
        import matplotlib.image

        w = self._writer()
        if report.is_file():
            w.add_text("report", report.read_text(encoding="utf-8"))
        for p in plots:
            w.add_image(f"plots/{p.stem}", matplotlib.image.imread(str(p))[..., :3], dataformats="HWC")
        for m, s in summary.get("methods", {}).items():
            mw = self._writer(m)
            for k in ("final_score", "best_score", "train_wall_s", "total_bytes_up"):
                if isinstance(s.get(k), (int, float)):
                    mw.add_scalar(f"summary/{k}", s[k], s.get("final_round") or 0)
            mw.flush()
        w.flush()

    def close(self, status: str) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()
