"""The Python API: what ``import federa`` offers a notebook or a script.

``federa.Config`` builds and validates a configuration, ``federa.run`` runs one experiment into
a results folder and returns a :class:`RunResult`, ``federa.compare`` runs methods across
heterogeneity and seeds, ``federa.load_model`` gives back a trained model as a ready
``transformers`` model. ``federa run`` on the command line goes through :func:`run` too.

Nothing heavy is imported here at module level: ``import federa`` must stay cheap, so torch,
transformers and the run machinery load when a function first needs them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federa.errors import ConfigError, DiskFullError, FederaError, ModelError, disk_full_reason, is_disk_full

if TYPE_CHECKING:
    import pandas
    from torch import nn

    from federa.config import Config as Settings

Log = Callable[[str], Any]
PathLike = str | os.PathLike


def _quiet(*_: Any) -> None:
    return None


def _merge(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (dots for nesting) in ``tree``; a mapping merges into the section already there."""
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if isinstance(value, Mapping) and isinstance(node.get(last), dict):
        for k, v in value.items():
            _merge(node[last], str(k), v)
    else:
        node[last] = dict(value) if isinstance(value, Mapping) else value


class Config:
    """A validated federa configuration.

    ``Config()`` is the built-in default; ``Config("exp.yaml")`` reads a YAML file;
    ``Config({"rounds": 3})`` takes a mapping. Keyword arguments override any of them: top-level
    keys directly (``rounds=3``, ``methods=["lora", "federa"]``), a section as a mapping that is
    merged into it (``partition={"alpha": 0.1}``), a nested key with dots
    (``**{"partition.alpha": 0.1}``). ``overrides`` takes ``--set``-style strings
    (``["partition.alpha=0.1"]``). Every key is checked as ``federa run`` checks it: a bad one
    raises :class:`~federa.errors.ConfigError` naming the key and the fix.

    Keys read as attributes (``cfg.rounds``, ``cfg.partition.alpha``); :meth:`replace` returns a
    changed copy; :meth:`to_yaml` writes what ``federa run --config`` reads back.
    """

    __slots__ = ("settings",)

    def __init__(self, source: PathLike | Mapping[str, Any] | Config | Settings | None = None, /, *,
                 overrides: Iterable[str] = (), **keys: Any) -> None:
        from federa.config import build_config, load_config

        if isinstance(source, Config):
            source = source.settings
        if source is None or isinstance(source, (str, os.PathLike)):
            base = load_config(source)  # the file's keys, validated (the default when None)
            tree = base.model_dump(mode="json") if source is not None else {}
        elif isinstance(source, Mapping):
            tree = json.loads(json.dumps(dict(source), default=str))  # a deep copy the caller can't alias
        elif hasattr(source, "model_dump"):
            tree = source.model_dump(mode="json")
        else:
            raise ConfigError(f"federa.Config: expected a YAML path, a mapping or a Config, got {type(source).__name__}")
        for key, value in keys.items():
            _merge(tree, key, value)
        self.settings: Settings = build_config(tree, list(overrides))

    @classmethod
    def from_yaml(cls, path: PathLike, /, **keys: Any) -> Config:
        return cls(Path(path), **keys)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], /, **keys: Any) -> Config:
        return cls(mapping, **keys)

    def replace(self, **keys: Any) -> Config:
        """A copy with ``keys`` changed (same rules as the constructor's keyword arguments)."""
        return Config(self, **keys)

    def to_dict(self) -> dict[str, Any]:
        return self.settings.model_dump(mode="json")

    def to_yaml(self) -> str:
        return self.settings.to_yaml()

    def save(self, path: PathLike) -> Path:
        """Write the resolved config as YAML (``federa run --config PATH`` re-runs it)."""
        path = Path(path)
        path.write_text(self.to_yaml(), encoding="utf-8")
        return path

    def __getattr__(self, name: str) -> Any:
        if name == "settings":  # not set yet: __init__ failed part-way
            raise AttributeError(name)
        return getattr(self.settings, name)

    def __eq__(self, other: object) -> bool:
        other = other.settings if isinstance(other, Config) else other
        return self.settings == other

    __hash__ = None  # type: ignore[assignment]  # equal by value, and mutable in spirit

    def __repr__(self) -> str:
        s = self.settings
        return f"federa.Config(methods={s.methods}, rounds={s.rounds}, num_clients={s.num_clients}, ...)"


def _settings(config: PathLike | Mapping[str, Any] | Config | Settings | None) -> Settings:
    return Config(config).settings if not isinstance(config, Config) else config.settings


@dataclass(frozen=True)
class RunResult:
    """What one ``federa.run`` left in its results folder, read back.

    ``methods``: each method's summary (status, trainable parameters, initial/final/best score,
    time and rounds to target, bytes; the rows of ``report.md``). ``metrics``: every line of
    ``metrics.jsonl`` (one per evaluated round and method). ``models``: each finished method's
    final model or adapter folder, which :func:`load_model` loads.
    """

    run_dir: Path
    config: Config
    summary: dict[str, Any]
    metrics: list[dict[str, Any]] = field(repr=False)

    @property
    def methods(self) -> dict[str, dict[str, Any]]:
        return self.summary.get("methods", {})

    @property
    def models(self) -> dict[str, Path]:
        return {m: Path(s["final_model"]) for m, s in self.methods.items()
                if s.get("status") == "done" and s.get("final_model")}

    @property
    def failed(self) -> list[str]:
        """Methods that did not finish (a NaN loss, a stopped federation)."""
        return [m for m, s in self.methods.items() if s.get("status") != "done"]

    @property
    def report(self) -> Path:
        return self.run_dir / "report.md"

    @property
    def target_score(self) -> float | None:
        return self.summary.get("target_score")

    def metrics_frame(self) -> pandas.DataFrame:
        """``metrics`` as a pandas DataFrame (one row per method and evaluated round)."""
        try:
            import pandas
        except ImportError:
            raise FederaError("RunResult.metrics_frame needs pandas; pip install pandas "
                              "(or use RunResult.metrics, a list of dicts)") from None
        return pandas.DataFrame.from_records(self.metrics)

    def load_model(self, method: str, *, peft: bool = False) -> nn.Module:
        """The trained model of ``method``; see :func:`load_model`."""
        return load_model(self.run_dir, method, peft=peft)

    @classmethod
    def read(cls, run_dir: PathLike) -> RunResult:
        """Read a results folder back (any finished or interrupted ``federa run``)."""
        from federa.results_dir import RunDir

        rd = RunDir(Path(run_dir))
        if not rd.config.is_file():
            raise FederaError(f"{rd.root}: no config.yaml there; pass the folder of a federa run")
        summary = json.loads(rd.summary.read_text(encoding="utf-8")) if rd.summary.is_file() else {}
        return cls(run_dir=rd.root, config=Config(rd.config), summary=summary, metrics=rd.read_metrics())


def run(config: PathLike | Mapping[str, Any] | Config | Settings | None = None, out: PathLike | None = None, *,
        resume: bool = False, progress: bool = True, log: Log | None = print,
        allow_changed: Sequence[str] = ()) -> RunResult:
    """Run every method of ``config`` on one client partition; results go to ``out``.

    ``config``: a :class:`Config`, a YAML path, a mapping, or None for the built-in default.
    ``out``: the results folder (default ``runs/<time>-<name>``); it must be new or empty.
    ``resume=True`` continues the interrupted run in ``out`` with its own ``config.yaml``
    (pass no config). ``progress``: a live status line on a terminal, one line per round
    otherwise. ``log``: where messages go (None: nowhere). ``allow_changed``: with ``resume``, keys
    of config.yaml that may differ from the run's start (e.g. ``rounds``); any other change is refused.

    SIGINT/SIGTERM stop at the next safe point (between two local steps): finished rounds stay
    on disk and :class:`~federa.interrupt.RunInterrupted` (a ``KeyboardInterrupt``) says the
    ``federa run --resume`` command that continues.
    """
    from federa.results_dir import RunDir, default_run_dir, discard_unstarted, open_run_dir

    log = log or _quiet
    if resume:
        if out is None:
            raise ConfigError("resume=True continues a results folder: pass out=<that folder>")
        if config is not None:
            raise ConfigError("resume=True takes the run's own config.yaml; pass config=None")
        out = Path(out)
        if not (out / "config.yaml").is_file():
            raise ConfigError(f"--resume {out}: no config.yaml there; pass the folder of an earlier run")
        cfg = Config(out / "config.yaml").settings
    else:
        cfg = _settings(config)
        out = Path(out) if out is not None else default_run_dir(cfg)
    created = not out.exists()
    from federa.interrupt import StopOnSignal

    # Signals are caught from before the folder opens: one arriving while it opens, or while
    # the training code is still importing, then stops with the resume line like any other.
    with StopOnSignal() as stop:
        try:
            run_dir = open_run_dir(cfg, out, resume=resume, allow_changed=allow_changed)
        except OSError as err:  # config.yaml or its fingerprint did not fit on the disk
            if not is_disk_full(err):
                raise
            raise _disk_full(err, out, removed=not resume and discard_unstarted(RunDir(out), created_root=created)) \
                from None
        stop.run_dir = run_dir.root
        log(f"results: {run_dir.root}")
        try:
            from federa.experiment import run_experiment

            stop.check()
            summary = run_experiment(cfg, run_dir, progress=progress, log=log, stop=stop)
        except Exception as err:
            # Found after the folder was opened (data, model, or a bug): leave no half-made run
            # behind, so the corrected command is not refused as "not empty".
            removed = not resume and discard_unstarted(run_dir, created_root=created)
            if is_disk_full(err):
                raise _disk_full(err, run_dir.root, removed=removed) from None
            raise
    return RunResult(run_dir=run_dir.root, config=Config(cfg), summary=summary, metrics=run_dir.read_metrics())


def _disk_full(err: BaseException, root: Path, removed: bool) -> DiskFullError:
    """The one line for a disk that filled up mid-run: what is kept and the command that goes on.

    Every write of a run is atomic or append-only with a cut line dropped on resume
    (:mod:`federa.checkpoint`, :class:`~federa.results_dir.RunDir`), so what a full disk leaves is the
    state after the last checkpointed round, which ``--resume`` continues.
    """
    import shlex

    filename = getattr(err, "filename", None)
    what = f"{disk_full_reason(err)}" + (f" writing {filename}" if filename else "")
    if removed:
        return DiskFullError(f"the disk holding {root} is full ({what}); no round had finished, so "
                             "the folder was removed: free some space and run the same command again")
    return DiskFullError(f"the disk holding {root} is full ({what}); finished rounds are kept: free "
                         f"some space, then continue with `federa run --resume {shlex.quote(str(root))}`")


@dataclass(frozen=True)
class CompareResult:
    """What ``federa.compare`` wrote: ``out`` holds results.csv, summary.csv/.md, claims.md, plots/."""

    out: Path
    rows: list[dict[str, Any]]  # summary.csv: one row per (method, alpha), seeds pooled
    claims: list[Any]  # the FeDeRA paper's claims, each with its verdict
    failed: list[str]  # "method@alpha=..." that did not finish

    def summary_frame(self) -> pandas.DataFrame:
        import pandas

        return pandas.DataFrame.from_records(self.rows)


def compare(config: PathLike | Mapping[str, Any] | Config | Settings | None = None, *,
            methods: Sequence[str] | str | None = None, alphas: Sequence[float | str] | str | None = None,
            seeds: Sequence[int] | str | None = None, out: PathLike | None = None, target: float | None = None,
            lr_grid: bool = False, progress: bool = True, log: Log | None = print) -> CompareResult:
    """``federa compare`` from Python: every method on the same partitions, per alpha and seed.

    ``alphas``: Dirichlet concentrations and/or ``"iid"`` (default 0.1, 0.5, 1, iid); ``seeds``: each a new partition and
    init (default: the config's seed); ``out`` (default ``runs/compare-<name>``) is resumed when
    called again. Returns the summary rows and the claims verdicts (see ``docs/compare.md``).
    """
    from federa.compare.plan import DEFAULT_ALPHAS, Plan, parse_alphas, parse_methods, parse_seeds
    from federa.compare.execute import run_compare

    def joined(xs: Sequence[Any] | str) -> str:
        return xs if isinstance(xs, str) else ",".join(str(x) for x in xs)

    base = _settings(config)
    if target is not None and not 0 < target <= 1:
        raise ConfigError(f"target must be a score in (0, 1], got {target}; e.g. target=0.85")
    plan = Plan(
        base=base,
        methods=parse_methods(joined(methods)) if methods is not None else tuple(base.methods),
        alphas=parse_alphas(joined(alphas) if alphas is not None else DEFAULT_ALPHAS),
        seeds=parse_seeds(joined(seeds)) if seeds is not None else (base.seed,),
        out=Path(out) if out is not None else Path("runs") / f"compare-{base.name}",
        target=target, lr_grid=lr_grid,
    )
    outcome = run_compare(plan, progress=progress, log=log or _quiet)
    return CompareResult(out=plan.out, rows=outcome["rows"], claims=outcome["claims"], failed=outcome["failed"])


def load_model(run_dir: PathLike, method: str, *, peft: bool = False) -> nn.Module:
    """The final model of ``method`` in the results folder ``run_dir``, ready for inference.

    A plain ``transformers`` model (``AutoModelFor...Classification``) by default: a LoRA-family
    or IA³ adapter merged into the pretrained weights (FedEx-LoRA's base fold added first).
    ``peft=True`` returns the ``peft`` model with the adapter unmerged instead. Prompt and prefix
    tuning cannot be merged (their soft tokens are inputs, not weights): load them with
    ``peft=True``. The tokenizer is saved beside the model (``AutoTokenizer.from_pretrained`` of
    the folder in ``RunResult.models``).
    """
    from federa.loading import load_final_model

    return load_final_model(Path(run_dir), method, as_peft=peft)
