"""Saving ONNX files (external data past the protobuf limit), reading their interface, and one dtype rewrite.

Protobuf cannot serialise a message of 2 GiB or more, so larger models keep their weights in a side file
(https://onnx.ai/onnx/repo-docs/ExternalData.html). The side file is named after the model and referenced by a
relative path, so the folder can be moved as a whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

PROTOBUF_LIMIT = 2**31  # bytes
GRAPH_HEADROOM = 64 * 2**20  # room left for the graph itself next to the weights
EXTERNAL_DATA_THRESHOLD = PROTOBUF_LIMIT - GRAPH_HEADROOM
SMALL_TENSOR_BYTES = 1024  # stay inline: shape-inference inputs (axes, shapes) must be readable from the graph


def external_data_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".data")


def needs_external_data(initializer_bytes: int, threshold: int = EXTERNAL_DATA_THRESHOLD) -> bool:
    return initializer_bytes >= threshold


def _initializer_bytes(tensor: TensorProto) -> int:
    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    return math.prod(tensor.dims) * itemsize


def save_proto(model: onnx.ModelProto, path: Path, threshold: int = EXTERNAL_DATA_THRESHOLD) -> Path:
    """Write `model` to `path`, with its weights in `<path>.data` when they reach `threshold` bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    side = external_data_path(path)
    side.unlink(missing_ok=True)  # onnx appends to an existing side file
    total = sum(_initializer_bytes(t) for t in model.graph.initializer)
    external = needs_external_data(total, threshold)
    onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=side.name, size_threshold=SMALL_TENSOR_BYTES)
    return path


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # ONNX element type name, e.g. "FLOAT", "BFLOAT16", "INT64"
    dims: tuple[int | str, ...]  # an int for a fixed size, the symbol's name for a dynamic one


@dataclass(frozen=True)
class GraphSummary:
    """What a file exposes and holds, read without loading external weights."""

    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    initializer_count: int
    initializer_bytes: int
    initializer_dtypes: frozenset[str]
    external_data: bool

    def input(self, name: str) -> TensorSpec:
        return next(s for s in self.inputs if s.name == name)

    def output(self, name: str) -> TensorSpec:
        return next(s for s in self.outputs if s.name == name)


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    t = value.type.tensor_type
    dims = tuple(d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim)
    return TensorSpec(value.name, TensorProto.DataType.Name(t.elem_type), dims)


def summarize(model: onnx.ModelProto | Path) -> GraphSummary:
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    inits = model.graph.initializer
    return GraphSummary(
        opset=next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        inputs=tuple(_spec(v) for v in model.graph.input),
        outputs=tuple(_spec(v) for v in model.graph.output),
        initializer_count=len(inits),
        initializer_bytes=sum(_initializer_bytes(t) for t in inits),
        initializer_dtypes=frozenset(TensorProto.DataType.Name(t.data_type) for t in inits),
        external_data=any(t.data_location == TensorProto.EXTERNAL for t in inits),
    )


def _widen_tensor(tensor: TensorProto) -> None:
    if tensor.data_type == TensorProto.BFLOAT16:
        widened = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)
        tensor.CopyFrom(widened)


def _widen_graph(graph: onnx.GraphProto) -> None:
    for tensor in graph.initializer:
        _widen_tensor(tensor)
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type == TensorProto.BFLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                _widen_tensor(attr.t)
            elif attr.type == onnx.AttributeProto.GRAPH:
                _widen_graph(attr.g)
            elif attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT:
                attr.i = TensorProto.FLOAT if attr.i == TensorProto.BFLOAT16 else attr.i


def bf16_to_fp32(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with every bf16 weight, constant, cast target and interface type made fp32 (exact widening of
    the weights; the bf16 rounding points become fp32). For running bf16 graphs where only fp32 kernels exist."""
    widened = onnx.ModelProto()
    widened.CopyFrom(model)
    _widen_graph(widened.graph)
    return widened


def summarize_ir(model) -> GraphSummary:
    """`summarize` for an in-memory onnx_ir model (e.g. `ONNXProgram.model`), whose weights may be on the meta
    device: sizes come from the declared shapes and dtypes."""

    def spec(value) -> TensorSpec:
        dims = tuple(d if isinstance(d, int) else d.value for d in value.shape)
        return TensorSpec(value.name, value.dtype.name, dims)

    inits = list(model.graph.initializers.values())
    return GraphSummary(
        opset=model.opset_imports.get("", 0),
        inputs=tuple(spec(v) for v in model.graph.inputs),
        outputs=tuple(spec(v) for v in model.graph.outputs),
        initializer_count=len(inits),
        initializer_bytes=sum(int(math.prod(v.shape) * v.dtype.itemsize) for v in inits),
        initializer_dtypes=frozenset(v.dtype.name for v in inits),
        external_data=False,
    )
