"""The sampling loop on the server (BLS): RES-2ab in fp64 over guided evaluations of the dit_step model."""

import numpy as np
import triton_python_backend_utils as pb_utils

from cosmos_triton.checkpoints import latent_shape, read_dit_checkpoint
from cosmos_triton.pipeline import latent_noise, uncond_context
from cosmos_triton.sampler import sample
from cosmos_triton.triton_io import (
    Cancelled,
    bls_call,
    bls_output,
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
        self.device = stage_device(args)
        self.model_type = read_dit_checkpoint(stage_settings(args).dit_path).architecture.model_type

    def execute(self, requests):
        return respond("sampler", requests, self.handle)

    def handle(self, request):
        cond = get_tensor(request, "prompt_embedding")
        log_placement("sampler", prompt_embedding=cond)
        uncond = uncond_context(self.model_type, cond, get_tensor(request, "negative_embedding"),
                                bool(get_scalar(request, "has_negative")))
        shape = latent_shape(*(get_scalar(request, n) for n in ("num_video_frames", "height", "width")))
        constants = [pb_utils.Tensor.from_dlpack("cond", _dlpack(cond)),
                     pb_utils.Tensor.from_dlpack("uncond", _dlpack(uncond)),
                     pb_utils.Tensor("guidance", np.array([get_scalar(request, "guidance")], dtype=np.float32)),
                     pb_utils.Tensor("fps", np.array([get_scalar(request, "fps")], dtype=np.float32))]

        def x0_fn(x, sigma):
            if request.is_cancelled():  # one round trip per step; lets a client stop a long generation
                raise Cancelled()
            inputs = [tensor_out("x", x), tensor_out("sigma", sigma), *constants]
            response = bls_call("dit_step", inputs, ["x0"], self.device, parent=request)
            return bls_output(response, "x0")

        x_T = latent_noise(shape, get_scalar(request, "seed"), self.device)
        return [tensor_out("latent", sample(x0_fn, x_T, get_scalar(request, "num_steps")))]


def _dlpack(t):
    import torch.utils.dlpack

    return torch.utils.dlpack.to_dlpack(t.contiguous())
