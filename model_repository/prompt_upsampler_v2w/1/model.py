"""Video2World prompt upsampler stage (reference §6.2): Pixtral-12B writes the prompt from the last input frame;
the user's text prompt is ignored unless the request disables the upsampler."""

import triton_python_backend_utils as pb_utils

from cosmos_triton.backend.triton_io import get_scalar, get_string, respond, stage_device, stage_settings, string_out
from cosmos_triton.upsampler.video2world import Video2WorldPromptUpsampler


class TritonPythonModel:
    def initialize(self, args):
        self.upsampler = Video2WorldPromptUpsampler(stage_settings(args).v2w_upsampler_path, stage_device(args))

    def execute(self, requests):
        return respond("prompt_upsampler_v2w", requests, self.handle)

    def handle(self, request):
        if bool(get_scalar(request, "disable_prompt_upsampler")):
            return [string_out("prompt", get_string(request, "prompt"))]
        frames = pb_utils.get_input_tensor_by_name(request, "input_frames").as_numpy()
        return [string_out("prompt", self.upsampler.upsample(frames, int(get_scalar(request, "seed"))))]
