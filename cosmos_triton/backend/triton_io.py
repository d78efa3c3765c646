"""Glue between Triton's Python backend and the package: tensors <-> Python values per `Io` description, and
errors -> responses a user can act on. Import only inside a Triton stub (triton_python_backend_utils exists there).

Tensors cross as DLPack (GPU-resident on GPU hosts, no host copies). RequestError, GuardrailBlocked and a refusal
passed up from a stage become INVALID_ARG with their message; Cancelled becomes CANCELLED; anything else becomes
INTERNAL with a short text (the exception type), the traceback going to the server log only: no server paths or
library details reach a client.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from cosmos_triton.errors import Cancelled, GuardrailBlocked, InternalOnly, RequestError, StageFailed, StageRefused
from cosmos_triton.pipeline.io import Io

_NUMPY_DTYPES = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "BOOL": np.bool_, "UINT8": np.uint8}


def model_parameters(args: Mapping[str, Any]) -> dict[str, str]:
    """The string parameters of this model's config.pbtxt (rendered by cosmos_triton.server.repository)."""
    config = json.loads(args["model_config"])
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


def stage_device(args: Mapping[str, Any]) -> str:
    """Triton does not pin the device for Python models: follow the instance kind it chose (KIND_AUTO/KIND_GPU)."""
    return f"cuda:{args['model_instance_device_id']}" if args["model_instance_kind"] == "GPU" else "cpu"


_placement_logged: set[str] = set()


def log_placement(model: str, values: Mapping[str, Any]) -> None:
    """Once per model: where its tensor inputs arrived (evidence that GPU tensors stay on the GPU)."""
    tensors = {k: v for k, v in values.items() if hasattr(v, "device")}
    if model not in _placement_logged and tensors:
        _placement_logged.add(model)
        where = ", ".join(f"{k}={tuple(v.shape)} {v.dtype} on {v.device}" for k, v in tensors.items())
        pb_utils.Logger.log_info(f"{model}: inputs {where}")


def _one(io: Io, array: np.ndarray) -> Any:
    values = array.reshape(-1)
    if values.size != 1:
        raise RequestError(io.name, f"expected exactly one value, got shape {list(array.shape)}")
    item = values[0]
    if io.dtype == "STRING":
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        if io.binary:
            return data
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(io.name, f"is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return item.item() if isinstance(item, np.generic) else item


def _value(io: Io, tensor: Any, device: str | None, clone: bool = False) -> Any:
    if io.dtype == "STRING" or io.is_scalar:
        return _one(io, tensor.as_numpy())
    import torch.utils.dlpack

    value = torch.utils.dlpack.from_dlpack(tensor.to_dlpack())
    if clone:  # a BLS response owns (and frees) its buffers
        value = value.clone()
    return value if device is None else value.to(device)


def read_inputs(request: Any, ios: Iterable[Io], device: str | None = None) -> dict[str, Any]:
    """The request's inputs as Python values (absent optional ones are left out); tensors moved to `device`.
    A batch dimension (entry points declare max_batch_size 1) is absorbed: scalars are read as one value."""
    values = {}
    for io in ios:
        tensor = pb_utils.get_input_tensor_by_name(request, io.name)
        if tensor is not None:
            values[io.name] = _value(io, tensor, device)
    return values


def read_outputs(response: Any, ios: Iterable[Io]) -> dict[str, Any]:
    """A BLS response's outputs as Python values; tensors cloned out of the response's buffers."""
    values = {}
    for io in ios:
        tensor = pb_utils.get_output_tensor_by_name(response, io.name)
        if tensor is not None:
            values[io.name] = _value(io, tensor, None, clone=True)
    return values


def to_tensors(values: Mapping[str, Any], ios: Iterable[Io], batched: bool = False) -> list[Any]:
    """Python values -> pb_utils tensors: strings/bytes as BYTES, scalars as [1] (or [1, 1] with a batch
    dimension), numpy arrays as they are, torch tensors through DLPack (they stay on their device)."""
    tensors = []
    for io in ios:
        if io.name not in values or values[io.name] is None:
            continue
        value = values[io.name]
        if io.dtype == "STRING":
            data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            array = np.array([data], dtype=np.object_)
        elif isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
        elif hasattr(value, "__dlpack__"):
            import torch.utils.dlpack

            tensors.append(pb_utils.Tensor.from_dlpack(io.name, torch.utils.dlpack.to_dlpack(value.contiguous())))
            continue
        else:
            array = np.array([value], dtype=_NUMPY_DTYPES[io.dtype])
        tensors.append(pb_utils.Tensor(io.name, array[None] if batched else array))
    return tensors


_INVALID = (RequestError, GuardrailBlocked, InternalOnly, StageRefused)
# Triton 2.51 hands every BLS error to the caller as INTERNAL, so a stage also names its code in the message
# (stages answer only the entry points, which take the tag off again: see error_from_stage).
_TAGS = {"INVALID_ARG": StageRefused, "CANCELLED": Cancelled}


def error_response(model: str, exc: BaseException, tag: bool = False) -> Any:
    if isinstance(exc, (*_INVALID, Cancelled)):
        code = "INVALID_ARG" if isinstance(exc, _INVALID) else "CANCELLED"
        message = str(exc) or "request cancelled"
        if tag and not isinstance(exc, InternalOnly):
            message = f"[{code}] {message}"
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, getattr(pb_utils.TritonError, code)))
    if isinstance(exc, StageFailed):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INTERNAL))
    pb_utils.Logger.log_error(f"{model}: {''.join(traceback.format_exception(exc))}")
    message = f"{model} failed ({type(exc).__name__}); the details are in the server log"
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL))


def error_from_stage(model: str, message: str) -> Exception:
    """The exception an entry point raises for a stage's error message (see error_response's tags)."""
    for code, exc_type in _TAGS.items():
        if message.startswith(f"[{code}] "):
            return exc_type(message.removeprefix(f"[{code}] "))
    return StageFailed(f"{model}: {message}")


def respond(model: str, requests: list, handler: Callable[[Any], list], tag: bool = False) -> list:
    """One response per request; a failing request gets its error and the others (and the server) go on."""
    responses = []
    for request in requests:
        try:
            responses.append(pb_utils.InferenceResponse(output_tensors=handler(request)))
        except Exception as exc:
            responses.append(error_response(model, exc, tag))
    return responses
