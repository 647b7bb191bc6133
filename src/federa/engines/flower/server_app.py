"""federa's Flower ServerApp: one experiment (or one method of it) driven over the Grid.

Run config (``flwr run ... --run-config``; every path absolute, as seen by the SuperLink's machine):

- ``out``: the results folder. If it already holds a ``config.yaml`` (an earlier or interrupted
  run, or one that ``federa run`` opened), the run continues it with that config.
- ``config``: a federa YAML file for a new run (empty: the built-in default); ``set``:
  ``;``-separated ``key=value`` overrides, as ``federa run --set``.
- ``method``: run only this method (``federa run`` submits one Flower run per method); empty:
  every method of the config, then the report.

The results folder gets the same files as an in-process run: metrics.jsonl, checkpoints,
result.json and the final model per method, summary.json, report.md and plots.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federa.errors import ConfigError


def _log(msg: str) -> None:
    print(msg, flush=True)  # the SuperLink forwards a ServerApp's stdout to `flwr log`


def serve(grid: Grid, context: Context, out: str, config: str = "", overrides: str = "", method: str = "") -> None:
    from federa import writer_lock
    from federa.config import load_config
    from federa.results_dir import default_run_dir, open_run_dir

    root = Path(out) if out else None
    # The ServerApp writes the folder for as long as it runs, even after the `federa run` that
    # submitted it died: it holds the writer lock, so a resume meanwhile is refused.
    if root is not None and (root / "config.yaml").is_file():
        cfg = load_config(root / "config.yaml")
        run_dir = open_run_dir(cfg, root, resume=True, role="federa ServerApp", log=_log)
    else:
        sets = [s.strip() for s in overrides.split(";") if s.strip()]
        cfg = load_config(config or None, [*sets, "engine=flower"])
        run_dir = open_run_dir(cfg, root or default_run_dir(cfg), resume=False, role="federa ServerApp", log=_log)
    try:
        _serve(grid, context, cfg, run_dir, method)
    finally:
        writer_lock.release(run_dir.root)


def _serve(grid: Grid, context: Context, cfg, run_dir, method: str) -> None:
    """Every method still to run in ``run_dir`` (or only ``method``), then the report."""
    import json
    from functools import partial

    from federa.engines.flower.driver import drive_method
    from federa.job import prepare_job
    from federa.pending import pin_partition, run_info, run_pending, write_report

    if method and method not in cfg.methods:
        raise ConfigError(f"run config method={method} is not in the run's methods {cfg.methods}")
    _log(f"results: {run_dir.root}")
    job = prepare_job(cfg)
    pin_partition(run_dir, job)

    def drive(job, m, run_dir):
        result = drive_method(grid, job, m, run_dir, context=context, log=_log)
        _log(f"[{m}] {result['status']}")
        return result

    run_pending(job, run_dir, [method] if method else cfg.methods, drive,
                after_each=partial(write_report, run_dir, cfg, run_info(job)), log=_log)
    _log(json.dumps({"results": str(run_dir.root)}))


def make_server_app(out: str = "", config: str = "", overrides: str = "", method: str = "") -> ServerApp:
    """A ServerApp with fixed settings (simulation passes no run config); empty ones come from it."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        rc = context.run_config
        serve(grid, context, out=out or str(rc.get("out", "")), config=config or str(rc.get("config", "")),
              overrides=overrides or str(rc.get("set", "")), method=method or str(rc.get("method", "")))

    return server


app = make_server_app()
