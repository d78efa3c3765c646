"""Tokenizer decoder stage: normalised latent -> uint8 frames [T, H, W, 3] (reference §3.2, §4.8)."""

from cosmos_triton.backend.triton_io import get_tensor, log_placement, respond, stage_device, stage_settings, tensor_out
from cosmos_triton.models.tokenizer import CosmosVideoTokenizer, frames_to_uint8


class TritonPythonModel:
    def initialize(self, args):
        self.tokenizer = CosmosVideoTokenizer(stage_settings(args).tokenizer_path, stage_device(args))

    def execute(self, requests):
        return respond("tokenizer_decoder", requests, self.handle)

    def handle(self, request):
        import torch

        with torch.no_grad():
            latent = get_tensor(request, "latent")
            log_placement("tokenizer_decoder", latent=latent)
            frames = frames_to_uint8(self.tokenizer.decode(latent))
        return [tensor_out("video", frames)]  # uint8 on the device: the only large tensor crosses once, 4x smaller
