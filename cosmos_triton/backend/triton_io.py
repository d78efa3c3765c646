"""Glue between Triton's Python backend and the package, so every model.py stays a few lines.

Tensors cross as DLPack (GPU-resident on GPU hosts, no host copies); errors become responses a user can act on:
RequestError -> INVALID_ARG with its message, anything else -> INTERNAL with the traceback only in the server log.
Import only inside a Triton stub (triton_python_backend_utils exists there).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from cosmos_triton.errors import GuardrailBlocked, RequestError
from cosmos_triton.settings import ServeSettings


class Cancelled(Exception):
    pass


def stage_settings(args: dict) -> ServeSettings:
    """Checkpoint selection, exported by the launcher (or the container's environment) as COSMOS_* variables."""
    return ServeSettings.from_env()


def stage_device(args: dict) -> str:
    """Triton does not pin the device for Python models: follow the instance kind it chose (KIND_AUTO)."""
    return f"cuda:{args['model_instance_device_id']}" if args["model_instance_kind"] == "GPU" else "cpu"


_placement_logged: set[str] = set()


def log_placement(stage: str, **tensors: Any) -> None:
    """Once per stage: where its inputs arrived (evidence that GPU tensors stay on the GPU between stages)."""
    if stage not in _placement_logged:
        _placement_logged.add(stage)
        where = ", ".join(f"{k}={tuple(v.shape)} {v.dtype} on {v.device}" for k, v in tensors.items())
        pb_utils.Logger.log_info(f"{stage}: inputs {where}")


def get_tensor(request: Any, name: str) -> Any | None:
    """The named input as a torch tensor (zero-copy through DLPack), None when absent."""
    import torch.utils.dlpack

    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else torch.utils.dlpack.from_dlpack(t.to_dlpack())


def bls_output(response: Any, name: str) -> Any:
    """A BLS response's output as a torch tensor, cloned: the response owns (and frees) its buffer."""
    import torch.utils.dlpack

    return torch.utils.dlpack.from_dlpack(pb_utils.get_output_tensor_by_name(response, name).to_dlpack()).clone()


def get_scalar(request: Any, name: str) -> Any | None:
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return None
    value = t.as_numpy().reshape(-1)
    if value.size != 1:
        raise RequestError(name, f"expected exactly one value, got shape {list(t.as_numpy().shape)}")
    item = value[0]
    return item.item() if isinstance(item, np.generic) else item  # BYTES elements are plain bytes


def get_string(request: Any, name: str) -> str | None:
    value = get_scalar(request, name)
    if value is None or isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(name, f"is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


_FIELD_DTYPES = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "BOOL": np.bool_}


def read_fields(request: Any, ios: Iterable[Any]) -> dict[str, Any]:
    """Scalar request fields (repository.Io descriptions) as Python values; absent optional ones are None."""
    return {io.name: (get_string if io.dtype == "STRING" else get_scalar)(request, io.name) for io in ios}


def fields_out(values: dict[str, Any], ios: Iterable[Any]) -> list:
    """The output tensors of a validated request: strings as BYTES [1], arrays as they are, scalars as [1]."""
    outputs = []
    for io in ios:
        value = values[io.name]
        if io.dtype == "STRING":
            outputs.append(string_out(io.name, value))
        elif isinstance(value, np.ndarray):
            outputs.append(tensor_out(io.name, np.ascontiguousarray(value)))
        else:
            outputs.append(tensor_out(io.name, np.array([value], dtype=_FIELD_DTYPES[io.dtype])))
    return outputs


def tensor_out(name: str, value: Any) -> Any:
    """torch tensor -> output tensor through DLPack (stays on its device); numpy arrays pass as they are."""
    if isinstance(value, np.ndarray):
        return pb_utils.Tensor(name, value)
    import torch.utils.dlpack

    return pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(value.contiguous()))


def string_out(name: str, value: str | bytes) -> Any:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return pb_utils.Tensor(name, np.array([data], dtype=np.object_))


def error_response(stage: str, exc: BaseException) -> Any:
    if isinstance(exc, (RequestError, GuardrailBlocked)):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
    if isinstance(exc, Cancelled):
        error = pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED)
        return pb_utils.InferenceResponse(error=error)
    pb_utils.Logger.log_error(f"{stage}: {''.join(traceback.format_exception(exc))}")
    message = f"{stage} failed: {type(exc).__name__}: {exc}"
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL))


def respond(stage: str, requests: list, handler: Callable[[Any], list]) -> list:
    """One response per request; a failing request gets its error and the others (and the server) go on."""
    responses = []
    for request in requests:
        try:
            responses.append(pb_utils.InferenceResponse(output_tensors=handler(request)))
        except Exception as exc:  # noqa: BLE001 - every failure must become a response, never a dead stub
            responses.append(error_response(stage, exc))
    return responses


def bls_call(model: str, inputs: list, outputs: list[str], device: str, parent: Any = None) -> Any:
    """Synchronous BLS call; results stay on the caller's device. Raises with the callee's message on error."""
    kwargs: dict[str, Any] = {}
    if device.startswith("cuda"):
        kwargs["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_GPU, int(device[5:]))
    if parent is not None:
        kwargs["trace"] = parent.trace()
    response = pb_utils.InferenceRequest(model_name=model, inputs=inputs, requested_output_names=outputs,
                                         **kwargs).exec()
    if response.has_error():
        raise RuntimeError(f"{model}: {response.error().message()}")
    return response
