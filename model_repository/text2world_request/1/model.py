"""Validates a Text2World request against the served checkpoint's envelope and fills in the defaults."""

from cosmos_triton.backend.triton_io import fields_out, read_fields, respond, stage_settings
from cosmos_triton.models.checkpoints import read_dit_checkpoint
from cosmos_triton.request.envelope import validate_request
from cosmos_triton.server.repository import REQUEST


class TritonPythonModel:
    def initialize(self, args):
        self.envelope = read_dit_checkpoint(stage_settings(args).dit_path).envelope

    def execute(self, requests):
        return respond("text2world_request", requests, self.handle)

    def handle(self, request):
        return fields_out(validate_request(self.envelope, read_fields(request, REQUEST)), REQUEST)
