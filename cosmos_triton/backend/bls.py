"""The stage call of the flow on the server: a BLS request to the stage's model, carrying the internal token and
the parent's trace, refused once the client has cancelled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import triton_python_backend_utils as pb_utils

from cosmos_triton.backend.internal import internal_parameters
from cosmos_triton.backend.triton_io import error_from_stage, read_outputs, to_tensors
from cosmos_triton.errors import Cancelled
from cosmos_triton.pipeline.catalog import model_kinds
from cosmos_triton.pipeline.stages import STAGE_KINDS


class BLSCaller:
    """`call(model, **inputs) -> outputs` over BLS; `cancelled()` is polled before every call."""

    def __init__(self, token: str, parent: Any, cancelled: Callable[[], bool],
                 on_call: Callable[[str, float], None] | None = None) -> None:
        self.parameters = internal_parameters(token)
        self.parent = parent
        self.cancelled = cancelled
        self.on_call = on_call
        self.kinds = model_kinds()

    def __call__(self, model: str, **inputs: Any) -> dict[str, Any]:
        import time

        if self.cancelled():
            raise Cancelled("request cancelled")
        stage = STAGE_KINDS[self.kinds[model]]
        start = time.perf_counter()
        response = pb_utils.InferenceRequest(
            model_name=model, inputs=to_tensors(inputs, stage.inputs),
            requested_output_names=[io.name for io in stage.outputs], parameters=self.parameters,
            trace=self.parent.trace(),
        ).exec()
        if response.has_error():
            raise error_from_stage(model, response.error().message())
        outputs = read_outputs(response, stage.outputs)
        if self.on_call is not None:
            self.on_call(model, time.perf_counter() - start)
        return outputs
