"""T5 text encoder stage: prompt and negative prompt -> bf16 embeddings [1, 512, 1024] (reference §5)."""

import numpy as np

from cosmos_triton.backend.triton_io import get_string, respond, stage_device, stage_settings, tensor_out
from cosmos_triton.models.text_encoder import T5TextEncoder
from cosmos_triton.pipeline import encode_prompts


class TritonPythonModel:
    def initialize(self, args):
        self.t5 = T5TextEncoder(stage_settings(args).t5_path, stage_device(args))

    def execute(self, requests):
        return respond("t5_encoder", requests, self.handle)

    def handle(self, request):
        cond, negative, has_negative = encode_prompts(self.t5, get_string(request, "prompt"),
                                                      get_string(request, "negative_prompt") or "")
        return [tensor_out("prompt_embedding", cond), tensor_out("negative_embedding", negative),
                tensor_out("has_negative", np.array([has_negative]))]
