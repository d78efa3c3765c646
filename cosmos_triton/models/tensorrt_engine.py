"""Stage runner for TensorRT plans, and a DiT adapter that stands in for `CosmosDiT`.

Unverified: TensorRT cannot be installed where this was written, so this module has never run against a real
engine. What runs without TensorRT is tested (profile selection, the DiT input packing, the adapter with an
onnxruntime engine behind the same `run` interface); the rest follows the TensorRT 10 Python API
(https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/python-api-docs.html): name-based I/O,
`set_input_shape` / `set_tensor_address` / `execute_async_v3` on the caller's CUDA stream.

A stage picks its runner with `backend: torch | tensorrt` (`load_dit_backend`). One execution context per engine:
calls must not overlap (a Triton Python-backend instance handles one request at a time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from cosmos_triton.models.checkpoints import DiTArchitecture, DiTCheckpoint, read_dit_checkpoint

BACKENDS = ("torch", "tensorrt")
PLAN_SUFFIX = ".plan"
DIT_OUTPUT = "output"
Shape = tuple[int, ...]

# TensorRT DataType names -> torch dtypes (by name, so that the table is usable without TensorRT)
TORCH_DTYPES: dict[str, torch.dtype] = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "FP8": torch.float8_e4m3fn,
}


class StageEngine(Protocol):
    """What the adapters need from a runner: named torch tensors in, named torch tensors out."""

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


def import_tensorrt(what: str) -> Any:
    try:
        import tensorrt
    except ImportError as err:
        raise ImportError(f"{what} needs NVIDIA TensorRT's Python package (`import tensorrt`), which is not "
                          "installed (a stage can run with backend 'torch' instead)") from err
    return tensorrt


def parse_backend(value: str, stage: str) -> str:
    if value not in BACKENDS:
        raise ValueError(f"stage {stage}: backend {value!r} is not one of {', '.join(BACKENDS)}")
    return value


def plan_path(plan_dir: Path | str, stage: str) -> Path:
    """Where export/tensorrt_build.py writes a stage's plan: <plan_dir>/<stage>.plan."""
    return Path(plan_dir) / f"{stage}{PLAN_SUFFIX}"


@dataclass(frozen=True)
class Profile:
    """One optimisation profile of an engine: per input, the (min, opt, max) shapes it was built for."""

    shapes: Mapping[str, tuple[Shape, Shape, Shape]]

    def accepts(self, shapes: Mapping[str, Shape]) -> bool:
        for name, shape in shapes.items():
            low, _opt, high = self.shapes[name]
            if len(shape) != len(low) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high, strict=True)):
                return False
        return True


def select_profile(profiles: Sequence[Profile], shapes: Mapping[str, Shape], what: str = "engine") -> int:
    """Index of the first profile whose ranges hold every input shape."""
    for index, profile in enumerate(profiles):
        if profile.accepts(shapes):
            return index
    built = "; ".join(
        ", ".join(f"{n} {lo}..{hi}" for n, (lo, _opt, hi) in p.shapes.items()) for p in profiles
    )
    raise ValueError(f"{what}: input shapes {dict(shapes)} are outside every optimisation profile ({built})")


class TensorRTEngine:
    """A deserialised plan with one execution context. `run` takes and returns torch tensors on `device`, sets the
    input shapes per call (picking the profile that holds them) and enqueues on the current torch CUDA stream,
    so that the caller's following torch work on that stream is ordered after it."""

    def __init__(self, plan: Path | str, device: str | torch.device = "cuda") -> None:
        self.plan = Path(plan)
        trt = import_tensorrt(f"TensorRT engine {self.plan}")
        if not self.plan.is_file():
            raise FileNotFoundError(f"TensorRT plan not found: {self.plan}")
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"{self.plan}: TensorRT engines run on a CUDA device, not {self.device}")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(self.plan.read_bytes())
            if self.engine is None:
                raise RuntimeError(f"{self.plan}: TensorRT could not deserialise the plan (built by another "
                                   "TensorRT version or for another GPU?)")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])
        self.dtypes = {n: TORCH_DTYPES[self.engine.get_tensor_dtype(n).name] for n in names}
        self.profiles = tuple(
            Profile({n: tuple(tuple(s) for s in self.engine.get_tensor_profile_shape(n, k))  # type: ignore[misc]
                     for n in self.input_names})
            for k in range(self.engine.num_optimization_profiles)
        )
        self._profile: int | None = None

    def _checked(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if set(inputs) != set(self.input_names):
            raise KeyError(f"{self.plan.name}: inputs {sorted(inputs)} do not match the engine's "
                           f"{list(self.input_names)}")
        tensors = {}
        for name, tensor in inputs.items():
            if tensor.dtype != self.dtypes[name]:
                raise TypeError(f"{self.plan.name}: input {name} is {tensor.dtype}, "
                                f"the engine takes {self.dtypes[name]}")
            tensors[name] = tensor.to(self.device, non_blocking=True).contiguous()
        return tensors

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tensors = self._checked(inputs)
        stream = torch.cuda.current_stream(self.device)
        shapes = {name: tuple(t.shape) for name, t in tensors.items()}
        profile = select_profile(self.profiles, shapes, self.plan.name)
        if profile != self._profile:
            self.context.set_optimization_profile_async(profile, stream.cuda_stream)
            self._profile = profile
        for name, tensor in tensors.items():
            self.context.set_input_shape(name, shapes[name])
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.plan.name}: TensorRT execution failed for input shapes {shapes}")
        return outputs


def pack_dit_inputs(x: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, fps: float | torch.Tensor,
                    condition_mask: torch.Tensor | None, *, video2world: bool,
                    dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The DiT graph's inputs (export/onnx/stages.py) from `CosmosDiT`'s call: network tensors in the graph dtype,
    c_noise one value per batch item, fps a 0-d fp32 tensor, condition_mask for Video2World only."""
    if video2world and condition_mask is None:
        raise ValueError("a Video2World DiT engine needs condition_mask")
    if not video2world and condition_mask is not None:
        raise ValueError("a Text2World DiT engine takes no condition_mask")
    batch = x.shape[0]
    if c_noise.numel() != batch:
        raise ValueError(f"c_noise has {c_noise.numel()} values for a batch of {batch}")
    fps_tensor = torch.as_tensor(fps, dtype=torch.float32, device=x.device).reshape(())
    inputs = {"x": x.to(dtype), "c_noise": c_noise.reshape(batch).to(x.device, dtype),
              "context": context.to(x.device, dtype), "fps": fps_tensor}
    if video2world:
        inputs["condition_mask"] = condition_mask.to(x.device, dtype)  # type: ignore[union-attr]  # checked above
    return inputs


class EngineDiT:
    """Stands in for `CosmosDiT`: same call, `dtype` and `device`, the network run by `engine` (a TensorRT plan or
    any runner of the exported DiT graph). EDM preconditioning and CFG stay in the caller, as with `CosmosDiT`."""

    def __init__(self, engine: StageEngine, arch: DiTArchitecture, dtype: torch.dtype,
                 device: str | torch.device) -> None:
        self.engine = engine
        self.arch = arch
        self.dtype = dtype
        self.device = torch.device(device)

    @property
    def video2world(self) -> bool:
        return self.arch.model_type == "Video2World"

    def __call__(self, x: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, fps: float | torch.Tensor,
                 condition_mask: torch.Tensor | None = None) -> torch.Tensor:
        inputs = pack_dit_inputs(x, c_noise, context, fps, condition_mask, video2world=self.video2world,
                                 dtype=self.dtype)
        return self.engine.run(inputs)[DIT_OUTPUT]

    @classmethod
    def from_plan(cls, plan: Path | str, checkpoint: Path | str | DiTCheckpoint,
                  device: str | torch.device = "cuda") -> EngineDiT:
        """The engine's dtype is the plan's (bf16 for the default export); the architecture is the checkpoint's."""
        ckpt = checkpoint if isinstance(checkpoint, DiTCheckpoint) else read_dit_checkpoint(checkpoint)
        engine = TensorRTEngine(plan, device)
        expected = {"x", "c_noise", "context", "fps"} | ({"condition_mask"} if ckpt.architecture.model_type
                                                          == "Video2World" else set())
        if set(engine.input_names) != expected or DIT_OUTPUT not in engine.output_names:
            raise ValueError(f"{plan}: engine inputs {list(engine.input_names)} / outputs "
                             f"{list(engine.output_names)} are not those of a {ckpt.architecture.model_type} DiT graph")
        return cls(engine, ckpt.architecture, engine.dtypes["x"], device)


def load_dit_backend(checkpoint: Path | str | DiTCheckpoint, backend: str = "torch", plan: Path | str | None = None,
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16):
    """`CosmosDiT` (backend 'torch') or `EngineDiT` over a TensorRT plan (backend 'tensorrt'), same call."""
    parse_backend(backend, "dit")
    if backend == "torch":
        from cosmos_triton.models.dit import load_dit

        return load_dit(checkpoint, device=device, dtype=dtype)
    if plan is None:
        raise ValueError("stage dit: backend 'tensorrt' needs the plan path (export/tensorrt_build.py writes it)")
    return EngineDiT.from_plan(plan, checkpoint, device)
