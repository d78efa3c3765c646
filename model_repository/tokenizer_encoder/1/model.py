"""Tokenizer encoder stage (Video2World): the selected input frames -> the normalised condition latent (§3.2, §4.7)."""

import numpy as np
import triton_python_backend_utils as pb_utils

from cosmos_triton.backend.triton_io import get_scalar, respond, stage_device, stage_settings, tensor_out
from cosmos_triton.media.visual_input import num_condition_latent_frames, prepare_condition_video
from cosmos_triton.models.tokenizer import CosmosVideoTokenizer


class TritonPythonModel:
    def initialize(self, args):
        self.device = stage_device(args)
        self.tokenizer = CosmosVideoTokenizer(stage_settings(args).tokenizer_path, self.device)

    def execute(self, requests):
        return respond("tokenizer_encoder", requests, self.handle)

    def handle(self, request):
        import torch

        frames = pb_utils.get_input_tensor_by_name(request, "input_frames").as_numpy()
        height, width, num_frames, num_input = (int(get_scalar(request, n)) for n in
                                                ("height", "width", "num_video_frames", "num_input_frames"))
        clip = prepare_condition_video(frames, height, width, num_frames).to(self.device)
        with torch.no_grad():
            latent = self.tokenizer.encode(clip.to(torch.bfloat16))
        return [tensor_out("condition_latent", latent),
                tensor_out("num_condition_frames", np.array([num_condition_latent_frames(num_input)], dtype=np.int32))]
