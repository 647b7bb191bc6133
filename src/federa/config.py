"""The one place that parses and validates user input (YAML file + ``--set`` overrides).

Everything downstream receives a frozen, typed :class:`Config`; nothing else reads YAML
or raw dictionaries. Every validation failure becomes one :class:`ConfigError` line that
names the key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from federa.errors import ConfigError
from federa.methods import available_methods, default_lr


class _Strict(BaseModel):
    # extra="forbid" turns a typo such as `partiton.alpha` into an error instead of a silent default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class PartitionConfig(_Strict):
    kind: Literal["iid", "dirichlet", "shards", "size"] = "dirichlet"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration: smaller = more skewed.")
    shards_per_client: int = Field(2, ge=1, description="kind=shards: label-sorted shards per client.")
    sizes: list[float] | None = Field(
        None, description="kind=size: relative client sizes (normalised); default: 1, 2, ..., n."
    )
    min_examples: int = Field(1, ge=1, description="Every client must hold at least this many examples.")


class LoraConfig(_Strict):
    r: int = Field(8, description="Adapter rank.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator: update = B·A·alpha/r.")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"])

    @field_validator("r")
    @classmethod
    def _positive_rank(cls, r: int) -> int:
        if r <= 0:
            raise ValueError(f"lora.r must be a positive integer, got {r}; try lora.r=8")
        return r

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split_modules(cls, v: Any) -> Any:
        return _split_list(v)


class FederaConfig(_Strict):
    svd_niter: int | None = Field(
        None, ge=0, description="None: exact SVD. N: randomised SVD (torch.svd_lowrank) with N iterations."
    )


class Ia3Config(_Strict):
    target_modules: list[str] = Field(default_factory=lambda: ["key", "value", "output.dense"])
    feedforward_modules: list[str] = Field(default_factory=lambda: ["output.dense"])

    @field_validator("target_modules", "feedforward_modules", mode="before")
    @classmethod
    def _split_modules(cls, v: Any) -> Any:
        return _split_list(v)


class PromptConfig(_Strict):
    num_virtual_tokens: int = Field(20, ge=1, description="Soft prompt length (method prompt).")


class PrefixConfig(_Strict):
    num_virtual_tokens: int = Field(10, ge=1, description="Prefix length per layer (method prefix).")


class AdapterConfig(_Strict):
    bottleneck: int = Field(16, ge=1, description="Bottleneck width of each Houlsby/Pfeiffer adapter.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["attention.output.dense", "output.dense"],
        description="Linear modules (name suffixes) followed by an adapter; BERT: attention and FFN outputs.",
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split_modules(cls, v: Any) -> Any:
        return _split_list(v)


class FlowerConfig(_Strict):
    """engine=flower: where the SuperLink is and how rounds tolerate failures."""

    mode: Literal["deployment", "simulation"] = "deployment"
    superlink: str = Field("127.0.0.1:9093", description="SuperLink address host:port (flwr run).")
    insecure: bool = True
    root_certificates: str | None = Field(None, description="CA certificate (PEM) of a TLS SuperLink.")
    min_replies: int | None = Field(
        None, ge=1, description="Aggregate a round if at least this many reply; None: half the sampled, rounded up."
    )
    round_timeout_s: float = Field(600.0, gt=0, description="Wait at most this long for a round's replies.")
    secagg_clip_range: float = Field(
        1.0, gt=0, description="secure_aggregation: client deltas must lie in [-x, x]; quantisation step 2x/2**22."
    )


class RobustConfig(_Strict):
    trim_fraction: float = Field(0.1, ge=0, lt=0.5, description="strategy=trimmed_mean: fraction cut per side.")
    clip_delta_norm: float | None = Field(None, gt=0, description="Clip each client's delta to this L2 norm.")
    max_update_norm: float | None = Field(None, gt=0, description="Reject an update whose delta norm exceeds this.")


class DpConfig(_Strict):
    """Client-level DP-FedAvg: clip deltas to clip_norm, add N(0, (z·C/m)²) to the mean."""

    enabled: bool = False
    clip_norm: float = Field(1.0, gt=0)
    noise_multiplier: float | None = Field(None, ge=0, description="z; None: chosen to meet target_epsilon.")
    target_epsilon: float | None = Field(None, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_noise_source(self) -> DpConfig:
        if self.enabled and (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("dp.enabled needs exactly one of dp.noise_multiplier or dp.target_epsilon; set one")
        return self


class ModelConfig(_Strict):
    path: str | None = Field(None, description="Local Hugging Face model folder; None = built-in MiniLM-L6.")
    num_threads: int | None = Field(None, ge=1, description="torch threads; None = torch's default.")
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...")


class DataConfig(_Strict):
    builtin: Literal["bbc_news"] = "bbc_news"
    path: str | None = Field(None, description="Local csv/json/jsonl/parquet file or saved `datasets` folder.")
    hub: str | None = Field(None, description="A `datasets` hub name (needs internet), e.g. ag_news.")
    hub_config: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    test_size: float = Field(0.2, gt=0, lt=1, description="Held-out fraction when the source has no test split.")
    split_seed: int = Field(0, description="Seed of the train/test split: fixed so every run sees one test set.")
    max_train_examples: int | None = Field(None, ge=1, description="Stratified subsample of train (quick runs).")
    max_test_examples: int | None = Field(None, ge=1, description="Stratified subsample of test (quick runs).")

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.path is not None and self.hub is not None:
            raise ValueError("set either data.path or data.hub, not both")
        return self


class Config(_Strict):
    name: str = "default"
    methods: list[str] = Field(default_factory=lambda: ["fft", "lora", "federa"])
    engine: Literal["inprocess", "flower"] = "inprocess"
    rounds: int = Field(10, ge=1)
    num_clients: int = Field(10, ge=1)
    clients_per_round: int = Field(5, ge=1)
    local_epochs: float | None = Field(None, gt=0, description="Local passes over the shard (overrides local_steps).")
    local_steps: int | None = Field(8, ge=1, description="Local optimiser steps per round.")
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    max_length: int = Field(64, ge=8)
    max_grad_norm: float | None = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    eval_every: int = Field(1, ge=1)
    target_accuracy: float | None = Field(
        None, gt=0, le=1, description="None: 99% of the best FFT accuracy of the run (or of any method)."
    )
    strategy: Literal["fedavg", "median", "trimmed_mean"] = "fedavg"
    secure_aggregation: bool = Field(False, description="engine=flower: Flower SecAgg+ (server sees only the sum).")
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    federa: FederaConfig = Field(default_factory=FederaConfig)
    ia3: Ia3Config = Field(default_factory=Ia3Config)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    prefix: PrefixConfig = Field(default_factory=PrefixConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    flower: FlowerConfig = Field(default_factory=FlowerConfig)
    robust: RobustConfig = Field(default_factory=RobustConfig)
    dp: DpConfig = Field(default_factory=DpConfig)
    lr: dict[str, float] = Field(default_factory=dict, validate_default=True)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)

    @field_validator("methods", mode="before")
    @classmethod
    def _split_methods(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        if not methods:
            raise ValueError("methods is empty; name at least one of " + ", ".join(available_methods()))
        for m in methods:
            if m not in available_methods():
                raise ValueError(f"unknown method '{m}'; choose from {', '.join(available_methods())}")
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods lists a method twice: {methods}")
        return methods

    @field_validator("lr")
    @classmethod
    def _fill_lr(cls, lr: dict[str, float]) -> dict[str, float]:
        for m, v in lr.items():
            if m not in available_methods():
                raise ValueError(f"lr.{m}: unknown method; choose from {', '.join(available_methods())}")
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
        if self.secure_aggregation:
            self._check_secure_aggregation()
        if self.dp.enabled and self.strategy != "fedavg":
            # The noise is calibrated to the sensitivity of a clipped mean, not of a median.
            raise ValueError(f"dp.enabled works with strategy=fedavg only, got strategy={self.strategy}")
        if self.local_epochs is None and self.local_steps is None:
            raise ValueError("set local_steps or local_epochs")
        if self.partition.sizes is not None and len(self.partition.sizes) != self.num_clients:
            raise ValueError(
                f"partition.sizes has {len(self.partition.sizes)} entries for {self.num_clients} clients"
            )
        return self

    def _check_secure_aggregation(self) -> None:
        """SecAgg+ gives the server only the sum, so nothing may need the individual updates."""
        if self.engine != "flower":
            raise ValueError("secure_aggregation runs on Flower's SecAgg+; set engine=flower")
        if self.strategy != "fedavg":
            raise ValueError(
                f"secure_aggregation needs strategy=fedavg (the server sees only the sum), got {self.strategy}"
            )
        if self.dp.enabled or self.robust.max_update_norm is not None or self.robust.clip_delta_norm is not None:
            raise ValueError("secure_aggregation hides individual updates: turn off dp.enabled, "
                             "robust.max_update_norm and robust.clip_delta_norm")
        if self.clients_per_round < 2:
            raise ValueError("secure_aggregation needs clients_per_round>=2 (SecAgg+ sums at least two clients)")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------------------
# Parsing


def _split_list(v: Any) -> Any:
    # `--set methods=federa,lora` arrives as one string; YAML lists pass through.
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return v


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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML from ``path`` (or the built-in default when None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}; pass an existing YAML file to --config")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {p} is not valid YAML: {str(err).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of keys, got {type(loaded).__name__}")
        raw = loaded or {}
    return build_config(raw, overrides)
