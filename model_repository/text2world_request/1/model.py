"""Validates a Text2World request against the served checkpoint's envelope and fills in the defaults."""

import numpy as np

from cosmos_triton.checkpoints import read_dit_checkpoint, validate_request
from cosmos_triton.repository import REQUEST
from cosmos_triton.triton_io import get_scalar, get_string, respond, stage_settings, string_out, tensor_out

DTYPES = {"INT64": "int64", "INT32": "int32", "FP32": "float32", "BOOL": "bool"}


class TritonPythonModel:
    def initialize(self, args):
        self.envelope = read_dit_checkpoint(stage_settings(args).dit_path).envelope

    def execute(self, requests):
        return respond("text2world_request", requests, self.handle)

    def handle(self, request):
        raw = {io.name: (get_string if io.dtype == "STRING" else get_scalar)(request, io.name) for io in REQUEST}
        req = validate_request(self.envelope, raw)
        return [string_out(io.name, req[io.name]) if io.dtype == "STRING"
                else tensor_out(io.name, np.array([req[io.name]], dtype=DTYPES[io.dtype])) for io in REQUEST]
