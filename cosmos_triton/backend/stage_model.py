"""The Triton model of one internal stage: parse the tensors, check the caller, call the stage, build the response.

Every stage model's model.py is this class; its config.pbtxt says which stage (`stage` parameter) and with which
checkpoint folders (cosmos_triton.pipeline.catalog).
"""

from __future__ import annotations

import json
from typing import Any

from cosmos_triton.backend.internal import require_internal, server_token
from cosmos_triton.backend.triton_io import (
    log_placement,
    model_parameters,
    read_inputs,
    respond,
    stage_device,
    to_tensors,
)
from cosmos_triton.pipeline.stages import STAGE_KINDS


class StageModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.name = json.loads(args["model_config"])["name"]
        params = model_parameters(args)
        stage_class = STAGE_KINDS[params["stage"]]
        self.device = stage_device(args) if stage_class.gpu else "cpu"
        self.stage = stage_class(params, self.device)
        self.token = server_token()

    def execute(self, requests: list) -> list:
        return respond(self.name, requests, self.handle, tag=True)

    def handle(self, request: Any) -> list:
        import torch

        require_internal(request, self.token)
        values = read_inputs(request, self.stage.inputs, self.device)
        log_placement(self.name, values)
        with torch.no_grad():
            return to_tensors(self.stage(**values), self.stage.outputs)
