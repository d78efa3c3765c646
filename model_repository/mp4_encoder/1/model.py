"""mp4 encoding stage: uint8 frames -> H.264 mp4 bytes, as the original save_video (reference §8)."""

from cosmos_triton.backend.triton_io import get_scalar, respond, string_out
from cosmos_triton.media.mp4 import encode_mp4


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        return respond("mp4_encoder", requests, self.handle)

    def handle(self, request):
        import triton_python_backend_utils as pb_utils

        frames = pb_utils.get_input_tensor_by_name(request, "video").as_numpy()
        return [string_out("mp4", encode_mp4(frames, int(get_scalar(request, "fps"))))]
