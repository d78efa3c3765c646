"""Video guardrail stage (reference §7.3-7.4): content safety on every frame, then face pixelation."""

from cosmos_triton.backend.triton_io import get_tensor, log_placement, respond, stage_device, stage_settings, tensor_out
from cosmos_triton.guardrail.runner import VideoGuardrail


class TritonPythonModel:
    def initialize(self, args):
        self.guardrail = VideoGuardrail(stage_settings(args).guardrail_path, stage_device(args))

    def execute(self, requests):
        return respond("video_guardrail", requests, self.handle)

    def handle(self, request):
        frames = get_tensor(request, "video")
        log_placement("video_guardrail", video=frames)
        # The original runs both filters on the uint8 numpy array; the one device->host copy happens here.
        return [tensor_out("video", self.guardrail(frames.cpu().numpy()))]
