"""Text2World prompt upsampler stage (reference §6.1): the 12B Mistral-NeMo upsampler, skipped when the request
disables it or the prompt is longer than word_limit_to_skip_upsampler words."""

from cosmos_triton.backend.triton_io import get_scalar, get_string, respond, stage_device, stage_settings, string_out
from cosmos_triton.upsampler.text2world import Text2WorldPromptUpsampler, word_count_exceeds


class TritonPythonModel:
    def initialize(self, args):
        self.upsampler = Text2WorldPromptUpsampler(stage_settings(args).t2w_upsampler_path, stage_device(args))

    def execute(self, requests):
        return respond("prompt_upsampler", requests, self.handle)

    def handle(self, request):
        prompt = get_string(request, "prompt")
        limit = int(get_scalar(request, "word_limit_to_skip_upsampler"))
        if not bool(get_scalar(request, "disable_prompt_upsampler")) and not word_count_exceeds(prompt, limit):
            prompt = self.upsampler.upsample(prompt, int(get_scalar(request, "seed")))
        return [string_out("prompt", prompt)]
