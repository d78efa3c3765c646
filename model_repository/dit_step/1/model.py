"""DiT denoiser step: one guided evaluation x0 = cond + g (cond - uncond), EDM-preconditioned in bf16."""

from cosmos_triton.denoiser import guided_x0
from cosmos_triton.dit import load_dit
from cosmos_triton.triton_io import (
    get_scalar,
    get_tensor,
    log_placement,
    respond,
    stage_device,
    stage_settings,
    tensor_out,
)


class TritonPythonModel:
    def initialize(self, args):
        self.net = load_dit(stage_settings(args).dit_path, device=stage_device(args))

    def execute(self, requests):
        return respond("dit_step", requests, self.handle)

    def handle(self, request):
        x, cond, uncond = (get_tensor(request, n) for n in ("x", "cond", "uncond"))
        log_placement("dit_step", x=x, cond=cond, uncond=uncond)
        x0 = guided_x0(self.net, x, get_tensor(request, "sigma"), cond, uncond, get_scalar(request, "guidance"),
                       get_scalar(request, "fps"))
        return [tensor_out("x0", x0)]
