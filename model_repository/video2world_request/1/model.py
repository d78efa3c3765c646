"""Validates a Video2World request against the served checkpoint's envelope, fills in the defaults, and decodes
the visual input to its last 1 or 9 frames (clear INVALID_ARG for unreadable or unsupported inputs)."""

from cosmos_triton.backend.triton_io import fields_out, get_scalar, read_fields, respond, stage_settings
from cosmos_triton.errors import RequestError
from cosmos_triton.media.visual_input import decode_visual_input, select_input_frames
from cosmos_triton.models.checkpoints import read_dit_checkpoint
from cosmos_triton.request.envelope import validate_request
from cosmos_triton.server.repository import V2W_REQUEST


class TritonPythonModel:
    def initialize(self, args):
        self.envelope = read_dit_checkpoint(stage_settings(args).v2w_dit_path).envelope

    def execute(self, requests):
        return respond("video2world_request", requests, self.handle)

    def handle(self, request):
        req = validate_request(self.envelope,
                               read_fields(request, (io for io in V2W_REQUEST if io.name != "input_frames")))
        data = get_scalar(request, "visual_input")
        if not data:
            raise RequestError("visual_input", "an image (jpg, png, webp) or a video (mp4) is required")
        n = req["num_input_frames"]
        req["input_frames"] = select_input_frames(decode_visual_input(data, keep_last=n), n)
        return fields_out(req, V2W_REQUEST)
