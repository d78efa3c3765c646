"""Triton stage classes shared by more than one model directory (each model.py re-exports one of them)."""

from __future__ import annotations

from cosmos_triton.backend.triton_io import (
    get_scalar,
    get_tensor,
    log_placement,
    respond,
    stage_device,
    stage_settings,
    tensor_out,
)
from cosmos_triton.diffusion.conditioning import VideoCondition
from cosmos_triton.diffusion.guidance import guided_x0
from cosmos_triton.models.dit import load_dit


class DiTStep:
    """One guided evaluation x0 = cond + g (cond - uncond), EDM-preconditioned in bf16. `dit_step` serves the
    Text2World weights, `dit_step_v2w` the Video2World ones with the condition of reference §4.7."""

    def initialize(self, args):
        self.name = args["model_name"]
        settings = stage_settings(args)
        path = settings.v2w_dit_path if self.name.endswith("_v2w") else settings.dit_path
        self.net = load_dit(path, device=stage_device(args))

    def execute(self, requests):
        return respond(self.name, requests, self.handle)

    def handle(self, request):
        x, cond, uncond = (get_tensor(request, n) for n in ("x", "cond", "uncond"))
        log_placement(self.name, x=x, cond=cond, uncond=uncond)
        condition = None
        gt_latent = get_tensor(request, "gt_latent")
        if gt_latent is not None:
            condition = VideoCondition.from_parts(gt_latent, get_tensor(request, "augment_latent"),
                                                  int(get_scalar(request, "num_condition_frames")))
        x0 = guided_x0(self.net, x, get_tensor(request, "sigma"), cond, uncond, get_scalar(request, "guidance"),
                       get_scalar(request, "fps"), condition)
        return [tensor_out("x0", x0)]
