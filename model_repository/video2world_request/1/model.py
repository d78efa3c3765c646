"""Validates a Video2World request against the served checkpoint's envelope, fills in the defaults, and decodes
the visual input to its last 1 or 9 frames (clear INVALID_ARG for unreadable or unsupported inputs)."""

import numpy as np

from cosmos_triton.checkpoints import RequestError, read_dit_checkpoint, validate_request
from cosmos_triton.repository import V2W_REQUEST
from cosmos_triton.triton_io import get_scalar, get_string, respond, stage_settings, string_out, tensor_out
from cosmos_triton.video_input import decode_visual_input, select_input_frames

DTYPES = {"INT64": "int64", "INT32": "int32", "FP32": "float32", "BOOL": "bool"}


class TritonPythonModel:
    def initialize(self, args):
        self.envelope = read_dit_checkpoint(stage_settings(args).v2w_dit_path).envelope

    def execute(self, requests):
        return respond("video2world_request", requests, self.handle)

    def handle(self, request):
        raw = {io.name: (get_string if io.dtype == "STRING" else get_scalar)(request, io.name)
               for io in V2W_REQUEST if io.name != "input_frames"}
        req = validate_request(self.envelope, raw)
        data = get_scalar(request, "visual_input")
        if not data:
            raise RequestError("visual_input", "an image (jpg, png, webp) or a video (mp4) is required")
        n = req["num_input_frames"]
        req["input_frames"] = select_input_frames(decode_visual_input(data, keep_last=n), n)
        outputs = []
        for io in V2W_REQUEST:
            if io.dtype == "STRING":
                outputs.append(string_out(io.name, req[io.name]))
            elif io.name == "input_frames":
                outputs.append(tensor_out(io.name, np.ascontiguousarray(req[io.name])))
            else:
                outputs.append(tensor_out(io.name, np.array([req[io.name]], dtype=DTYPES[io.dtype])))
        return outputs
