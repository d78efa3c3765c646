"""Run an exported graph with onnxruntime (CPU) and measure it against the PyTorch stage.

`OnnxRuntimeEngine` has the stage-runner interface of `cosmos_triton.models.tensorrt_engine.TensorRTEngine`
(`run(dict of torch tensors) -> dict of torch tensors`), so the DiT adapter can be exercised on CPU with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class Error:
    """max |got - want| and that divided by max |want| (relative to the reference's scale, not per element, so
    that values near zero do not dominate)."""

    max_abs: float
    max_rel: float

    def __str__(self) -> str:
        return f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}"


def measure(got: torch.Tensor, want: torch.Tensor) -> Error:
    if got.shape != want.shape:
        raise AssertionError(f"shape {tuple(got.shape)} != reference {tuple(want.shape)}")
    got64, want64 = got.double(), want.double()
    if not torch.isfinite(got64).all():
        raise AssertionError("non-finite values in the ONNX output")
    max_abs = float((got64 - want64).abs().max()) if got.numel() else 0.0
    scale = float(want64.abs().max()) if want.numel() else 0.0
    return Error(max_abs, max_abs / scale if scale else max_abs)


class OnnxRuntimeEngine:
    """onnxruntime CPU session with torch tensors in and out (fp32/int64 graphs: the CPU provider has no bf16)."""

    def __init__(self, path: Path | str, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = set(self.input_names) - set(inputs)
        extra = set(inputs) - set(self.input_names)
        if missing or extra:
            raise KeyError(f"{self.path.name}: inputs {sorted(inputs)} do not match the graph's "
                           f"{list(self.input_names)}")
        feed = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in inputs.items()}
        outputs = self.session.run(list(self.output_names), feed)
        return {name: torch.from_numpy(np.asarray(value)) for name, value in zip(self.output_names, outputs,
                                                                                  strict=True)}
