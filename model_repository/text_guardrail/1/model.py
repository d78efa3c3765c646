"""Text guardrail stage (reference §7.0-7.2): Blocklist then Aegis; a block ends the request naming the guardrail."""

from cosmos_triton.backend.triton_io import get_string, respond, stage_device, stage_settings, string_out
from cosmos_triton.guardrail.runner import TextGuardrail


class TritonPythonModel:
    def initialize(self, args):
        self.guardrail = TextGuardrail(stage_settings(args).guardrail_path, stage_device(args))

    def execute(self, requests):
        return respond("text_guardrail", requests, self.handle)

    def handle(self, request):
        return [string_out("prompt", self.guardrail(get_string(request, "prompt") or ""))]
