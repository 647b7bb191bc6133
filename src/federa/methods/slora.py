"""SLoRA (Babakniya et al., 2023, arXiv 2308.06522): sparse warm-up, then LoRA started from its SVD.

Stage 1 (rounds 1..``slora.warmup_rounds``): federated *sparse* fine-tuning. Every LoRA target
matrix W0 (``lora.target_modules``) trains only a fixed random subset of its entries, density
``slora.density``, the same subset on every client (a shared mask keeps the aggregate as sparse
as each update); the head trains densely, as in every method. The server draws the masks once
and broadcasts their indices as the setup (int32, counted once per client); each round only the
masked values (and the head) travel.

Stage 2 (the remaining rounds): LoRA on the same targets, whose factors start from the truncated
SVD of the accumulated stage-1 update ΔW = W_T − W0 of each target, split as FeDeRA splits W:

    B = U_r · sqrt(S_r / s)      A = sqrt(S_r / s) · V_rᵀ      so  s · B·A = U_r S_r V_rᵀ   (s = alpha/r)

At the switch the frozen base of the targets is W0 again: stage 1 serves as a data-driven
initialisation of LoRA (the paper's stated contribution), and the model right after the switch is
W0 + (best rank-r approximation of ΔW) on each target, with the stage-1 head carried over. The
dense stage-1 ΔW is not kept beside the adapter, so the final model is a plain peft LoRA adapter
for the original pretrained model (as for ``lora``). Nothing but the targets and the head trains
in stage 1, so nothing else is lost at the switch. The server computes the SVD once (in float64)
and sends the factors as the ordinary round-(warmup+1) state; clients never decompose. A Flower
node builds the stage-2 model itself from the pretrained model (:meth:`SLoRA.stage_model`), at the
round number's stage, so nothing but that state travels at the switch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from federa.errors import ModelError
from federa.methods.base import load_trainable_state, trainable_state
from federa.methods.bitfit import train_head
from federa.methods.federa import svd_factors
from federa.methods.lora import Lora, find_target_linears
from federa.methods.targets import layer_shape
from federa.settings import Section
from federa.strategies.base import derive_seed
from federa.types import State

if TYPE_CHECKING:
    from torch import nn

    from federa.config import Config

_PEFT_PREFIX = "base_model.model."
_MASK = ".slora_mask"  # setup key suffix: flat indices into a target's (out x in) matrix
_MASK_SALT = 0x5104A  # keeps the mask stream apart from every other stream derived from `seed`


class SloraSettings(Section):
    """``slora:`` the sparse warm-up (stage 2's adapter shape is the ``lora:`` section)."""

    density: float = Field(0.01, gt=0, le=1, description="Fraction of each target matrix's entries that train in "
                                                          "stage 1 (the paper's ~1%).")
    warmup_rounds: int = Field(3, ge=1, description="Rounds of sparse fine-tuning before LoRA starts.")
    # Best of a small grid on the built-in model and data (docs/methods.md): {1e-3: .93, 3e-3: .80, 1e-2: .95, 3e-2: .93}.
    sparse_lr: float = Field(1e-2, gt=0, description="AdamW rate of stage 1, masked values and head (stage 2 uses "
                                                     "lr.slora).")


class SLoRA(Lora):
    name = "slora"
    settings = SloraSettings
    # Its first stage trains sparse deltas, not LoRA pairs: the variants would freeze or fold factors
    # that do not exist yet.
    lora_variants = False
    # Stage 2's rate: LoRA's default (SLoRA's factors start from √(S/s) of the small ΔW, between
    # LoRA's B = 0 and FeDeRA's large √S of W); not tuned separately yet.
    default_lr = 1e-2

    @classmethod
    def check(cls, cfg: Config) -> str | None:
        s = cfg.slora
        if cfg.secure_aggregation:
            # SecAgg+'s legacy messages carry no round number, from which a node tells the stage.
            return "method slora changes what trains at round slora.warmup_rounds+1, which SecAgg+ rounds do not " \
                   "carry; set secure_aggregation=false"
        if cfg.inprocess.workers > 1:
            # Worker processes build their client model once per method, before the switch.
            return "method slora changes its model at round slora.warmup_rounds+1, which inprocess.workers>1 " \
                   "does not follow yet; set inprocess.workers=1"
        if s.warmup_rounds >= cfg.rounds:
            return f"slora.warmup_rounds={s.warmup_rounds} leaves no LoRA round of rounds={cfg.rounds}; " \
                   f"set slora.warmup_rounds<{cfg.rounds}"
        return None

    # -- stages -------------------------------------------------------------------------

    def stage_of(self, rnd: int) -> int:
        return 0 if rnd <= self.cfg.slora.warmup_rounds else 1

    def stage_lr(self, stage: int, lr: float) -> float:
        return self.cfg.slora.sparse_lr if stage == 0 else lr

    # -- stage 1: sparse fine-tuning ----------------------------------------------------

    def server_setup(self, model: nn.Module) -> State:
        """The shared masks: one per target, drawn from ``seed`` and the target's position."""
        from federa.methods.slora_layers import draw_mask

        linears = find_target_linears(model, self.cfg.lora.target_modules, self.cfg.lora.r)
        setup: State = {}
        for i, (name, layer) in enumerate(sorted(linears.items())):
            out_f, in_f = layer_shape(layer)
            setup[name + _MASK] = draw_mask(out_f * in_f, self.cfg.slora.density, derive_seed(self.cfg.seed, _MASK_SALT, i))
        return setup

    def apply(self, model: nn.Module, setup: State) -> nn.Module:
        from torch.nn.utils import parametrize

        from federa.methods.slora_layers import SparseDelta, stored_index

        linears = find_target_linears(model, self.cfg.lora.target_modules, self.cfg.lora.r)
        if {n + _MASK for n in linears} != setup.keys():
            raise ModelError("SLoRA setup does not match the model's target modules; rerun the server setup")
        model.requires_grad_(False)
        for name, layer in linears.items():
            parametrize.register_parametrization(
                layer, "weight", SparseDelta(stored_index(setup[name + _MASK], layer), layer.weight.dtype))
            layer.parametrizations.weight.original.requires_grad_(False)
        train_head(model)
        return model

    # -- the switch ---------------------------------------------------------------------

    def next_stage(self, stage: int, model: nn.Module, state: State, setup: State) -> tuple[nn.Module, State, State]:
        """Stage 2 from stage 1's final global ``state``: targets back to W0, LoRA from the SVD of each ΔW."""
        if stage != 1:
            raise ValueError(f"SLoRA has stages 0 and 1, not {stage}")
        import peft
        import torch
        from torch.nn.utils import parametrize

        from federa.methods.slora_layers import sparse_update

        load_trainable_state(model, state)
        linears = find_target_linears(model, self.cfg.lora.target_modules, self.cfg.lora.r)
        scaling = self.cfg.lora.alpha / self.cfg.lora.r
        factors: State = {}
        for name, layer in linears.items():
            values = state[f"{name}.parametrizations.weight.0.delta"]
            delta_w = sparse_update(setup[name + _MASK], values, layer_shape(layer))
            factors[f"{name}.lora_A"], factors[f"{name}.lora_B"] = svd_factors(delta_w, self.cfg.lora.r, scaling)
            # Back to W0 exactly: the parametrisation kept the original tensor untouched.
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
        pm = self.stage_model(1, model)
        with torch.no_grad():
            for name, layer in pm.named_modules():
                if isinstance(layer, peft.tuners.lora.LoraLayer):
                    key = name.removeprefix(_PEFT_PREFIX)
                    layer.lora_A["default"].weight.copy_(factors[f"{key}.lora_A"])
                    layer.lora_B["default"].weight.copy_(factors[f"{key}.lora_B"])
        # peft's modules_to_save copied the head as stage 1 left it: it carries over unchanged.
        return pm, trainable_state(pm), {}

    def stage_model(self, stage: int, base: nn.Module) -> nn.Module:
        """Stage 2's structure: LoRA on the pretrained W0 (the server's model after the switch has W0
        back on every target). A node builds it from the pretrained model, without the masks, which a
        node first sampled in stage 2 never receives; the factors and the head come with the state
        (peft keeps the head it wraps as a frozen, unused copy: stage 1's on the server, the initial
        one on a node, with no effect on any output)."""
        if stage != 1:
            raise ValueError(f"SLoRA has stages 0 and 1, not {stage}")
        import torch

        base.requires_grad_(False)
        # peft draws factors that the state overwrites: keep the global stream as it was.
        with torch.random.fork_rng(devices=[]):
            return self.adapted(base, init_lora_weights=False)
