"""The sampling loop on the server (BLS): RES-2ab in fp64 over guided evaluations of the DiT-step model.
With a condition latent (Video2World) it calls dit_step_v2w and sends the condition with every evaluation."""

import numpy as np
import triton_python_backend_utils as pb_utils

from cosmos_triton.backend.triton_io import (
    Cancelled,
    bls_call,
    bls_output,
    get_scalar,
    get_tensor,
    log_placement,
    respond,
    stage_device,
    tensor_out,
)
from cosmos_triton.diffusion.conditioning import VideoCondition
from cosmos_triton.diffusion.sampler import SIGMA_MAX, sample
from cosmos_triton.models.checkpoints import latent_shape
from cosmos_triton.pipeline import seeded_normal, uncond_context


class TritonPythonModel:
    def initialize(self, args):
        self.device = stage_device(args)

    def execute(self, requests):
        return respond("sampler", requests, self.handle)

    def handle(self, request):
        cond = get_tensor(request, "prompt_embedding")
        log_placement("sampler", prompt_embedding=cond)
        gt_latent = get_tensor(request, "condition_latent")
        model_type, dit = ("Text2World", "dit_step") if gt_latent is None else ("Video2World", "dit_step_v2w")
        uncond = uncond_context(model_type, cond, get_tensor(request, "negative_embedding"),
                                bool(get_scalar(request, "has_negative")))
        shape = latent_shape(*(get_scalar(request, n) for n in ("num_video_frames", "height", "width")))
        noise = seeded_normal(shape, get_scalar(request, "seed"), self.device)
        constants = [tensor_out("cond", cond), tensor_out("uncond", uncond),
                     pb_utils.Tensor("guidance", np.array([get_scalar(request, "guidance")], dtype=np.float32)),
                     pb_utils.Tensor("fps", np.array([get_scalar(request, "fps")], dtype=np.float32))]
        if gt_latent is not None:
            num_condition_frames = int(get_scalar(request, "num_condition_frames"))
            condition = VideoCondition.build(gt_latent.to(self.device), num_condition_frames, noise)
            constants += [tensor_out("gt_latent", condition.gt_latent),
                          tensor_out("augment_latent", condition.augment_latent),
                          pb_utils.Tensor("num_condition_frames", np.array([num_condition_frames], dtype=np.int32))]

        def x0_fn(x, sigma):
            if request.is_cancelled():  # one round trip per step; lets a client stop a long generation
                raise Cancelled()
            response = bls_call(dit, [tensor_out("x", x), tensor_out("sigma", sigma), *constants], ["x0"],
                                self.device, parent=request)
            return bls_output(response, "x0")

        return [tensor_out("latent", sample(x0_fn, noise * SIGMA_MAX, get_scalar(request, "num_steps")))]
