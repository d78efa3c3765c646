"""The public entry points `text2world`/`video2world` (one response per request: HTTP, unary gRPC, perf_analyzer)
and their streaming twins `*_stream` (decoupled gRPC stream: a progress response after every denoising step,
then the video). Both run the one flow (cosmos_triton.pipeline.flow) with BLS calls of the internal stages.

They replace Triton ensembles, which in 2.51 neither pass a client's cancellation to the steps after the first nor
let a step tell an ensemble's call from a client's direct call (so the guardrails could be walked around).
"""

from __future__ import annotations

import json
import time
from typing import Any

import triton_python_backend_utils as pb_utils

from cosmos_triton.backend.bls import BLSCaller
from cosmos_triton.backend.internal import server_token
from cosmos_triton.backend.metrics import EntryMetrics
from cosmos_triton.backend.triton_io import (
    error_response,
    model_parameters,
    read_inputs,
    respond,
    stage_device,
    to_tensors,
)
from cosmos_triton.errors import Cancelled
from cosmos_triton.pipeline.flow import generate, validate
from cosmos_triton.pipeline.model_types import MODEL_TYPES, OUTPUTS, PROGRESS_OUTPUTS
from cosmos_triton.request.envelope import Envelope


class EntryModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        self.name = config["name"]
        params = model_parameters(args)
        self.model_type = MODEL_TYPES[params["model_type"]]
        self.envelope = Envelope.from_dict(json.loads(params["envelope"]))
        self.device = stage_device(args)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.token = server_token()
        self.metrics = EntryMetrics(self.name)

    def execute(self, requests: list) -> list | None:
        if not self.decoupled:
            return respond(self.name, requests, lambda request: self.run(request, request.is_cancelled))
        for request in requests:
            self.stream(request)
        return None

    def run(self, request: Any, cancelled: Any, on_step: Any = None) -> list:
        """Validate, generate and return the output tensors (with the batch dimension the config declares)."""
        start = time.monotonic()
        self.metrics.in_flight.increment(1)
        try:
            outputs = self._run(request, cancelled, on_step)
        except BaseException as exc:
            self.metrics.finished(exc, time.monotonic() - start)
            raise
        finally:
            self.metrics.in_flight.increment(-1)
        self.metrics.finished(None, time.monotonic() - start)
        return outputs

    def _run(self, request: Any, cancelled: Any, on_step: Any) -> list:
        fields = read_inputs(request, self.model_type.request_inputs)
        req = validate(self.envelope, fields)
        dit = self.model_type.dit_model

        def timed(model: str, seconds: float) -> None:
            if model == dit:
                self.metrics.step.observe(seconds)
            else:
                self.metrics.stage_done(model, seconds)

        call = BLSCaller(self.token, request, cancelled, on_call=timed)

        def step(done: int, total: int) -> None:
            if cancelled():  # polled once per denoising step: one round trip to the server each
                raise Cancelled("request cancelled")
            if on_step is not None:
                on_step(done, total)

        generation = generate(self.model_type, call, req, self.device, step)
        values = {"video": generation.video, "prompt_used": generation.prompt_used,
                  "skipped_evaluations": generation.skipped_evaluations}
        return to_tensors(values, OUTPUTS, batched=True)

    def stream(self, request: Any) -> None:
        sender = request.get_response_sender()
        start = time.monotonic()

        def progress(done: int, total: int) -> None:
            elapsed = time.monotonic() - start
            eta = elapsed / done * (total - done)
            values = {"step": done, "total_steps": total, "elapsed_s": elapsed, "eta_s": eta}
            sender.send(pb_utils.InferenceResponse(output_tensors=to_tensors(values, PROGRESS_OUTPUTS, batched=True)))

        try:
            outputs = self.run(request, sender.is_cancelled, progress)
            response = pb_utils.InferenceResponse(output_tensors=outputs)
        except Exception as exc:
            response = error_response(self.name, exc)
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
