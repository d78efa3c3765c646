"""Export a loaded TorchScript module with torch's TorchScript-based exporter (`dynamo=False`).

The Cosmos tokenizer ships only as `encoder.jit`/`decoder.jit`, traced code that the dynamo exporter cannot take
(its TorchScript-to-ExportedProgram converter stops on data-dependent sizes). The TorchScript exporter takes it
with two symbolic overrides, needed because a loaded module carries no tensor shapes:
- `aten::_convolution`: the haar-wavelet filters are built at run time (`repeat` by the channel count), so the
  stock symbolic cannot read a kernel shape; ONNX Conv/ConvTranspose infer it from W when `kernel_shape` is absent;
- `aten::unflatten`: the stock symbolic slices the input's shape at a runtime index, which leaves the rank
  unknown to the transposes that follow; here the shape is cut with Shape(start, end), whose length is static.
One fix after export, which matters when a module is exported in bf16: where the tokenizer multiplies its bf16
filters by an integer tensor, the exporter writes the implicit cast with torch's ScalarType number for bfloat16
(15), which ONNX reads as complex128.

`widen_to_fp32` makes the fp32 version of a bf16 module at the TorchScript level (weights widened exactly, the
bf16 casts in its traced code retargeted). Exporting that, rather than widening a bf16 ONNX graph afterwards,
keeps Python-number constants exact: the bf16 export stores e.g. the unpatcher's 2*sqrt(2) as bf16 2.828125.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence

import onnx
import torch
from onnx import TensorProto
from torch.onnx import symbolic_helper

SYMBOLIC_OPSET = 15  # Shape(start, end) needs opset 15; the overrides apply from there up
TORCH_FLOAT32_SCALAR_TYPE = 6  # c10::ScalarType::Float
TORCH_BFLOAT16_SCALAR_TYPE = 15  # c10::ScalarType::BFloat16


@symbolic_helper.parse_args("v", "v", "v", "is", "is", "is", "i", "is", "i", "i", "i", "i", "i")
def _convolution(g, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups, *_unused):
    inputs = [x, weight] if symbolic_helper._is_none(bias) else [x, weight, bias]
    attrs = dict(strides_i=stride, pads_i=list(padding) * 2, dilations_i=dilation, group_i=groups)
    if transposed:
        return g.op("ConvTranspose", *inputs, output_padding_i=output_padding, **attrs)
    return g.op("Conv", *inputs, **attrs)


def _size_as_1d(g, value):
    const = symbolic_helper._maybe_get_const(value, "i")
    if isinstance(const, int):
        return g.op("Constant", value_t=torch.tensor([const], dtype=torch.int64))
    one = g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64))
    return g.op("Reshape", g.op("Cast", value, to_i=TensorProto.INT64), one)


@symbolic_helper.parse_args("v", "i", "v")
def _unflatten(g, x, dim, sizes):
    rank = symbolic_helper._get_tensor_rank(x)
    if rank is None:
        raise RuntimeError("unflatten of a tensor of unknown rank")
    dim = dim + rank if dim < 0 else dim
    if symbolic_helper._is_packed_list(sizes):
        middle = [_size_as_1d(g, s) for s in symbolic_helper._unpack_list(sizes)]
    else:
        middle = [g.op("Constant", value_t=torch.tensor(symbolic_helper._parse_arg(sizes, "is"), dtype=torch.int64))]
    parts = ([g.op("Shape", x, start_i=0, end_i=dim)] if dim > 0 else []) + middle
    if dim + 1 < rank:
        parts.append(g.op("Shape", x, start_i=dim + 1))
    return g.op("Reshape", x, g.op("Concat", *parts, axis_i=0))


_OVERRIDES = {"aten::_convolution": _convolution, "aten::unflatten": _unflatten}


@contextlib.contextmanager
def scripted_symbolics() -> Iterator[None]:
    for name, fn in _OVERRIDES.items():
        torch.onnx.register_custom_op_symbolic(name, fn, SYMBOLIC_OPSET)
    try:
        yield
    finally:
        for name in _OVERRIDES:
            torch.onnx.unregister_custom_op_symbolic(name, SYMBOLIC_OPSET)


def repair_bfloat16_casts(model: onnx.ModelProto) -> int:
    """Cast nodes whose target is torch's bfloat16 number, read by ONNX as complex128; returns how many."""
    fixed = 0
    for node in model.graph.node:
        if node.op_type != "Cast":
            continue
        for attr in node.attribute:
            if attr.name == "to" and attr.i == TORCH_BFLOAT16_SCALAR_TYPE:
                attr.i = TensorProto.BFLOAT16
                fixed += 1
    return fixed


def export_scripted(module: torch.jit.ScriptModule, args: tuple[torch.Tensor, ...], input_names: Sequence[str],
                    output_names: Sequence[str], dynamic_axes: Mapping[str, Mapping[int, str]]) -> onnx.ModelProto:
    """The ONNX model of a ScriptModule (with the overrides above); torch's default opset for this exporter."""
    buffer = io.BytesIO()
    with scripted_symbolics(), torch.no_grad():
        torch.onnx.export(module, args, buffer, dynamo=False, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()})
    model = onnx.load_from_string(buffer.getvalue())
    repair_bfloat16_casts(model)
    return model


def _is_dtype_argument(use) -> bool:
    schema = use.user.schema()
    if schema == "(no schema)":
        return False
    args = torch._C.parse_schema(schema).arguments
    return use.offset < len(args) and args[use.offset].name == "dtype"


def widen_to_fp32(module: torch.jit.ScriptModule) -> int:
    """In place: every int constant 15 (bfloat16) used only as a `dtype` argument becomes 6 (float32), in every
    method of every submodule, and the weights become fp32. Returns how many constants were retargeted; a bf16
    cast left in another form shows up as a dtype error when the module runs (see `check_runs_in_fp32`)."""
    retargeted = 0
    for sub in module.modules():
        for name in sub._c._method_names():
            for node in getattr(sub, name).graph.findAllNodes("prim::Constant"):
                out = node.output()
                if out.type().kind() != "IntType" or node.i("value") != TORCH_BFLOAT16_SCALAR_TYPE:
                    continue
                uses = out.uses()
                if uses and all(_is_dtype_argument(u) for u in uses):
                    node.i_("value", TORCH_FLOAT32_SCALAR_TYPE)
                    retargeted += 1
    module.float()
    return retargeted


def check_runs_in_fp32(module: torch.jit.ScriptModule, example: torch.Tensor, what: str) -> None:
    try:
        with torch.no_grad():
            out = module(example)
    except RuntimeError as err:
        raise RuntimeError(f"{what}: the fp32 version of the module does not run ({err}); it casts to bf16 in a "
                           "form widen_to_fp32 does not retarget") from err
    out = out[0] if isinstance(out, tuple) else out
    if out.dtype != torch.float32:
        raise RuntimeError(f"{what}: the fp32 version of the module returns {out.dtype}")
