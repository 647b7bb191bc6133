"""FeDeRA: LoRA whose A and B start from the top-r SVD of each pretrained weight.

For a target weight W (out x in) with W = U S Vᵀ and scaling s = alpha / r:

    B = U_r · sqrt(S_r / s)        A = sqrt(S_r / s) · V_rᵀ        so  s · B·A = U_r S_r V_rᵀ

and the frozen base becomes the residual W_res = W − s · B·A, so at initialisation the model
computes exactly what the pretrained model computed. This is peft's PiSSA initialisation
(``peft.tuners.lora.layer.LoraLayer.pissa_init``), split in two so that the SVD runs once, on
the server: SVD signs and randomised SVD differ between machines and thread counts, so clients
must never compute their own. Clients receive (A0, B0) and rebuild W_res themselves.

W is the (out x in) map a layer computes: for GPT-2's ``Conv1D``, which stores Wᵀ, the SVD is
of the transpose and the residual is stored transposed back, matching peft's ``fan_in_fan_out``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from federa.errors import ModelError
from federa.methods.lora import Lora, find_target_linears
from federa.methods.targets import effective_weight
from federa.settings import Section
from federa.types import State

if TYPE_CHECKING:
    import peft
    import torch
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file
    from torch import nn
    from transformers.pytorch_utils import Conv1D

_PEFT_PREFIX = "base_model.model."
_OVERSAMPLE = 10  # extra random directions for randomised SVD


def svd_factors(
    weight: torch.Tensor, r: int, scaling: float, niter: int | None = None, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with ``scaling · B @ A`` equal to the rank-r truncated SVD of ``weight``.

    ``niter=None`` uses the exact SVD; an integer uses ``torch.svd_lowrank`` with that many
    subspace iterations (fast for large matrices, approximate). ``device``: where to decompose
    (a GPU when the model trains there); the factors come back on ``weight``'s device. Only the
    server decomposes, and clients rebuild the residual from the broadcast factors on the CPU
    (:func:`residual_weight`), so where the SVD ran never changes any client's bits.
    """
    import torch

    w = weight.detach().to(device=device or weight.device, dtype=torch.float64)
    if niter is None:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        u, s, vh = u[:, :r], s[:r], vh[:r]
    else:
        # Oversample the random subspace (Halko et al., 2011): with q = r, as peft's pissa_niter
        # does, the top-r directions come out far from the exact ones (relative error ~0.7 on
        # MiniLM's query/value at r=8); with r + 10 columns it is several times smaller.
        q = min(r + _OVERSAMPLE, *w.shape)
        u, s, v = torch.svd_lowrank(w, q=q, niter=niter)
        u, s, vh = u[:, :r], s[:r], v[:, :r].T
    root = (s / scaling).sqrt()
    b = u * root  # (out, r)
    a = root[:, None] * vh  # (r, in)
    return a.to(weight.device, weight.dtype).contiguous(), b.to(weight.device, weight.dtype).contiguous()


def residual_weight(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """W − scaling·B@A, bit-identical on every machine and thread count.

    A BLAS matmul may sum in any order (it depends on threads and CPU), which changes the last
    bit. Instead: float32·float32 products are exact in float64, and we add the r rank-one
    terms elementwise in a fixed order, so every IEEE-754 machine gets the same bits.
    """
    import torch

    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    acc = torch.zeros(b.shape[0], a.shape[1], dtype=torch.float64)
    for k in range(a.shape[0]):
        acc += b64[:, k, None] * a64[None, k, :]
    return (weight.detach().to(torch.float64) - scaling * acc).to(weight.dtype)


class FederaSettings(Section):
    """``federa:`` how the SVD is taken (the adapter shape is the ``lora:`` section)."""

    svd_niter: int | None = Field(
        None, ge=0, description="None: exact SVD. N: randomised SVD (torch.svd_lowrank) with N iterations."
    )


class FeDeRA(Lora):
    name = "federa"
    settings = FederaSettings
    # Grid as for LoRA: {2e-3: .74, 5e-3: .78, 1.5e-2: .64}. FeDeRA's factors start large (√S),
    # so the same step is a smaller relative change than on LoRA's zero-started B, yet too
    # large a rate destroys the principal directions it started from.
    default_lr = 5e-3

    @property
    def scaling(self) -> float:
        return self.cfg.lora.alpha / self.cfg.lora.r

    def server_setup(self, model: nn.Module) -> State:
        import torch

        from federa.pretrained import resolve_device

        linears = find_target_linears(model, self.cfg.lora.target_modules, self.cfg.lora.r)
        setup: State = {}
        # svd_lowrank draws a random projection: seed it without touching the global stream.
        # Exact SVDs run on the GPU when the model trains there (randomised ones stay on the CPU,
        # where the seeded stream above makes them reproducible).
        device = resolve_device(self.cfg.model.device) if self.cfg.federa.svd_niter is None else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            for name, layer in linears.items():
                a, b = svd_factors(effective_weight(layer), self.cfg.lora.r, self.scaling, self.cfg.federa.svd_niter,
                                   device)
                setup[f"{name}.lora_A"], setup[f"{name}.lora_B"] = a, b
        return setup

    def apply(self, model: nn.Module, setup: State) -> nn.Module:
        import peft
        import torch
        from transformers.pytorch_utils import Conv1D

        linears = find_target_linears(model, self.cfg.lora.target_modules, self.cfg.lora.r)
        expected = {f"{n}.lora_{x}" for n in linears for x in "AB"}
        if expected != setup.keys():
            raise ModelError("FeDeRA setup does not match the model's target modules; rerun the server setup")
        # init_lora_weights=False: peft's own init is overwritten below, skip the work.
        pm = self.adapted(model, init_lora_weights=False)
        with torch.no_grad():
            for name, layer in pm.named_modules():
                if not isinstance(layer, peft.tuners.lora.LoraLayer):
                    continue
                key = name.removeprefix(_PEFT_PREFIX)
                a, b = setup[f"{key}.lora_A"], setup[f"{key}.lora_B"]
                layer.lora_A["default"].weight.copy_(a)
                layer.lora_B["default"].weight.copy_(b)
                base_layer = layer.get_base_layer()
                base = base_layer.weight
                if isinstance(base_layer, Conv1D):  # stored (in, out): subtract in that orientation
                    base.copy_(residual_weight(base.T, a, b, self.scaling).T)
                else:
                    base.copy_(residual_weight(base, a, b, self.scaling))
        return pm

    def save(self, model: nn.Module, out_dir: Path, setup: State) -> None:
        """Save a plain peft LoRA adapter that applies to the *original* pretrained model.

        The trained model is W_res + s·B·A = W + s·(B·A − B0·A0): a rank-2r LoRA with
        A' = [A; A0] and B' = [B, −B0] (peft's PiSSA-to-LoRA conversion), so
        ``PeftModel.from_pretrained(pretrained, out_dir)`` needs no residual. The initial
        factors are saved too (``federa_init.safetensors``) to rebuild the residual form.
        """
        import torch
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.cpu() for k, v in get_peft_model_state_dict(model).items()}  # the setup lives on the CPU
        for key in list(state):
            if ".lora_A." in key or ".lora_B." in key:
                module = key.removeprefix(_PEFT_PREFIX).rsplit(".lora_", 1)[0]
                if ".lora_A." in key:
                    state[key] = torch.cat([state[key], setup[f"{module}.lora_A"]], dim=0)
                else:
                    state[key] = torch.cat([state[key], -setup[f"{module}.lora_B"]], dim=1)
        trained = model.peft_config["default"]
        config = self.peft_config(sorted(trained.target_modules), trained.fan_in_fan_out,
                                  init_lora_weights=True, rank_multiplier=2)
        config.base_model_name_or_path = getattr(model, "name_or_path", None) or None
        config.save_pretrained(str(out_dir))
        save_file({k: v.contiguous() for k, v in state.items()}, str(out_dir / "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        save_file({k: v.contiguous() for k, v in setup.items()}, str(out_dir / "federa_init.safetensors"))
        (out_dir / "federa.json").write_text(json.dumps(
            {"r": self.cfg.lora.r, "alpha": self.cfg.lora.alpha, "scaling": self.scaling,
             "note": "adapter_model.safetensors is a rank-2r LoRA for the original pretrained model; "
                     "federa_init.safetensors holds the broadcast (A0, B0) of each target module"},
            indent=2))
