"""`python -m cosmos_triton.server` / `cosmos-serve`: serve the text2world and video2world entry points.

    cosmos-serve --checkpoint_dir checkpoints --diffusion_transformer_dir Cosmos-1.0-Diffusion-7B-Text2World
    cosmos-serve ... -- --log-info=true          # arguments after `--` go to tritonserver untouched
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from cosmos_triton.deployment import DIT_MODES, OFFLOAD_GROUPS, ModelOptions, ServeSettings, ServingOptions
from cosmos_triton.pipeline.catalog import ENTRY_POINTS
from cosmos_triton.server.install import TRITONSERVER_ENV, ServerError
from cosmos_triton.server.process import EXIT_TIMEOUT_S, ServerHandle, start_server
from cosmos_triton.server.supervisor import Supervisor, serve_health

# flag -> ServeSettings field: the original's checkpoint flags plus ours
CHECKPOINT_FLAGS = {
    "checkpoint_dir": "checkpoint_dir",
    "diffusion_transformer_dir": "dit_dir",
    "v2w_diffusion_transformer_dir": "v2w_dit_dir",
    "tokenizer_dir": "tokenizer_dir",
    "t5_dir": "t5_dir",
    "guardrail_dir": "guardrail_dir",
    "prompt_upsampler_dir": "t2w_upsampler_dir",
    "v2w_prompt_upsampler_dir": "v2w_upsampler_dir",
}


def gpu_list(text: str) -> tuple[int, ...]:
    """"0,1" -> (0, 1)."""
    try:
        gpus = tuple(int(part) for part in text.split(","))
        ServingOptions(gpus=gpus)  # distinct, >= 0
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated GPU ids such as 0,1, got {text!r}") from exc
    return gpus


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cosmos-serve",
        description="Serve the Cosmos-1.0 text2world and video2world entry points (each one whose DiT checkpoint is "
        "present) with tritonserver. Arguments after `--` are passed to tritonserver.",
    )
    defaults = ServeSettings()
    ckpt = parser.add_argument_group("checkpoints (folder names inside --checkpoint_dir)")
    for flag, name in CHECKPOINT_FLAGS.items():
        ckpt.add_argument(f"--{flag}", f"--{flag.replace('_', '-')}", dest=flag, default=getattr(defaults, name),
                          help=f"default: {getattr(defaults, name)}")
    ckpt.add_argument("--entry_points", "--entry-points", nargs="+", choices=ENTRY_POINTS, default=[],
                      help="serve only these (default: each one whose DiT checkpoint is present); the stages only "
                      "the other one calls are not loaded, e.g. text2world alone saves the Video2World DiT, its "
                      "upsampler and the tokenizer encoder")
    memory = parser.add_argument_group("memory (the original's offload flags: weights in pinned host memory, moved "
                                       "to the GPU for each request, never re-read from disk)")
    for group in OFFLOAD_GROUPS:
        memory.add_argument(f"--offload_{group}", action="store_true")
    memory.add_argument("--offload_mode", choices=["stage", "blocks"], default="stage",
                        help="how the offloaded stages hold their weights: uploaded per call, or streamed block by "
                        "block (transformer layers of T5, LlamaGuard, the upsamplers, the DiT)")
    memory.add_argument("--dit_offload", choices=["stage", "blocks"], default="",
                        help="blocks: stream the DiT's transformer blocks from host memory during each pass")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--dit_mode", choices=DIT_MODES, default="exact",
                       help="exact: the original's bf16 math; fp8: FP8 GEMMs in the DiT blocks (Hopper)")
    speed.add_argument("--attention", choices=["auto", "sdpa", "cudnn", "fa3"], default="auto",
                       help="auto: FlashAttention-3 when installed on Hopper, else SDPA (cuDNN)")
    speed.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                       help="compile the DiT blocks at load (auto: on a GPU)")
    speed.add_argument("--tensorrt_plans", default="",
                       help="folder of TensorRT plans from export/tensorrt_build.py: the DiT steps run them "
                       "(needs the tensorrt package; unverified in this project's CI)")
    speed.add_argument("--warm", choices=["all", "default"], default="all",
                       help="compile at load for every accepted resolution or only the default one")
    speed.add_argument("--compile_cache_dir", default=str(Path.home() / ".cache" / "cosmos-triton" / "compile"),
                       help="compiled kernels kept across restarts")
    serving = ServingOptions()
    srv = parser.add_argument_group("serving")
    srv.add_argument("--address", default="127.0.0.1",
                     help="address the HTTP, gRPC and metrics ports bind to (0.0.0.0: every interface)")
    srv.add_argument("--http-port", type=int, default=8000, help="0: any free port")
    srv.add_argument("--grpc-port", type=int, default=8001, help="0: any free port")
    srv.add_argument("--metrics-port", type=int, default=8002, help="0: any free port")
    srv.add_argument("--entry-instances", type=int, default=serving.entry_instances,
                     help="generations in progress at once per entry point (per GPU on GPUs)")
    srv.add_argument("--gpus", type=gpu_list, default=(),
                     help="comma-separated GPU ids, e.g. 0,1: one pipeline replica on each (entry instances and "
                     "one instance of every GPU stage per GPU); default: every GPU tritonserver sees")
    srv.add_argument("--max-queue-size", type=int, default=serving.max_queue_size,
                     help="requests waiting per entry point before new ones are refused")
    srv.add_argument("--queue-timeout", type=float, default=serving.queue_timeout_s,
                     help="seconds a request may wait in the queue (0: no limit)")
    srv.add_argument("--admin-key", default=None,
                     help="value of the cosmos-admin-key header that unlocks Triton's model-control, repository, "
                     "shared-memory, logging and trace APIs (default: a random key per launch, kept by the launcher)")
    srv.add_argument("--health-port", type=int, default=8003,
                     help="the launcher's /health/live and /health/ready (stub deaths repaired, drain seen); 0: off")
    srv.add_argument("--drain-timeout", type=float, default=1800.0,
                     help="on SIGTERM/SIGINT: seconds running generations may take to finish (longer than one "
                     "generation); new requests are refused meanwhile")
    srv.add_argument("--exit-timeout", type=int, default=EXIT_TIMEOUT_S,
                     help="seconds tritonserver itself waits for in-flight requests after the drain")
    srv.add_argument("--ready-timeout", type=float, default=1800.0, help="seconds to wait for all models")
    srv.add_argument("--log-verbose", type=int, default=0)
    srv.add_argument("--log-file", default=None, help="also append the server log to this file")
    srv.add_argument("--model-repository", default=None,
                     help="serve this repository as is instead of rendering one for the checkpoints")
    srv.add_argument("--tritonserver", default=None,
                     help=f"tritonserver binary (default: ${TRITONSERVER_ENV}, PATH, the nvidia-pytriton wheel)")
    return parser


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:  # everything after a bare `--` goes to tritonserver untouched
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    return build_parser().parse_args(argv), extra


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(**{name: getattr(args, flag) for flag, name in CHECKPOINT_FLAGS.items()},
                         entry_points=tuple(args.entry_points)).resolved()


def models_from_args(args: argparse.Namespace) -> ModelOptions:
    offload = frozenset(group for group in OFFLOAD_GROUPS if getattr(args, f"offload_{group}"))
    return ModelOptions(offload=offload, offload_mode=args.offload_mode, dit_offload=args.dit_offload,
                        dit_mode=args.dit_mode, attention=args.attention,
                        compile=args.compile, compile_cache_dir=args.compile_cache_dir, warm=args.warm,
                        tensorrt_plans=args.tensorrt_plans)


def serving_from_args(args: argparse.Namespace) -> ServingOptions:
    return ServingOptions(entry_instances=args.entry_instances, max_queue_size=args.max_queue_size,
                          queue_timeout_s=args.queue_timeout, gpus=args.gpus)


EXIT_TIMEOUT_LINE = "Exit timeout expired"


def _serve(handle: ServerHandle, args: argparse.Namespace, stop_requested: threading.Event
           ) -> tuple[int | None, bool]:
    """Wait for readiness, then supervise until a stop is requested (drain, then None: "stop it now") or the
    server dies (its exit code); with whether a drain saw every running generation finish."""
    deadline = time.monotonic() + args.ready_timeout
    while not stop_requested.is_set():
        if not handle.is_alive():
            return handle.stop() or 1, False
        if handle.is_ready():
            break
        if time.monotonic() > deadline:
            print(f"[cosmos-triton] not ready after {args.ready_timeout:.0f} s; stopping", file=sys.stderr)
            handle.stop()
            return 1, False
        stop_requested.wait(0.5)
    supervisor = Supervisor(handle, log=lambda line: print(line, flush=True)).start()
    health = serve_health(supervisor, args.address, args.health_port) if args.health_port else None
    if not stop_requested.is_set():
        models = ", ".join(f"{m['name']}({m.get('state', '?')})" for m in handle.models())
        where = f"  health http://{handle.host}:{args.health_port}/health/ready" if health else ""
        print(f"[cosmos-triton] ready: HTTP http://{handle.http_url}  gRPC {handle.grpc_url}  "
              f"metrics {handle.metrics_url}{where}\n[cosmos-triton] models: {models}\n"
              "[cosmos-triton] Ctrl-C to stop", flush=True)
    while not stop_requested.is_set() and handle.is_alive():
        stop_requested.wait(0.5)
    finished = False
    if handle.is_alive():
        print(f"[cosmos-triton] draining: new requests are refused, running ones get up to {args.drain_timeout:.0f} s",
              flush=True)
        finished = supervisor.drain(args.drain_timeout)
        print(f"[cosmos-triton] {'drained' if finished else 'drain limit reached'}; stopping", flush=True)
    supervisor.stop()
    if health is not None:
        health.shutdown()
    if handle.is_alive():
        return None, finished
    code = handle.stop()
    print(f"[cosmos-triton] tritonserver exited with code {code}", file=sys.stderr)
    return code or 1, False


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    settings = settings_from_args(args)
    if not Path(settings.checkpoint_dir).is_dir():
        print(f"[cosmos-triton] warning: checkpoint dir {settings.checkpoint_dir} does not exist", file=sys.stderr)
    stop_requested = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        if stop_requested.is_set():  # a second Ctrl-C: do not wait for the drain
            raise KeyboardInterrupt
        stop_requested.set()

    # install before starting, so a SIGTERM during model loading still stops the server cleanly
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    handle: ServerHandle | None = None
    try:
        handle = start_server(
            settings, args.model_repository, http_port=args.http_port, grpc_port=args.grpc_port,
            metrics_port=args.metrics_port, address=args.address, serving=serving_from_args(args),
            models=models_from_args(args),
            admin_key=args.admin_key, log_file=args.log_file, echo=sys.stdout, log_verbose=args.log_verbose,
            exit_timeout_s=args.exit_timeout, extra_args=extra, tritonserver=args.tritonserver,
        )
        program = os.fsdecode(next(iter(handle.process.args)))  # type: ignore[arg-type]  # Popen was given a list
        print(f"[cosmos-triton] starting {program} (pid {handle.process.pid}) with "
              f"{json.dumps(asdict(settings))}", flush=True)
        code, drained = _serve(handle, args, stop_requested)
        if code is not None:
            return code
        code = handle.stop(signal.SIGINT if received and received[0] == signal.SIGINT else signal.SIGTERM)
        if code and drained and EXIT_TIMEOUT_LINE in handle.log_tail():
            # Every generation finished; tritonserver only timed out on a request record it never released
            # (see Supervisor._entries_idle). Its stubs and shared memory are gone: the stop is clean.
            print(f"[cosmos-triton] tritonserver reported '{EXIT_TIMEOUT_LINE}' after a complete drain", flush=True)
            return 0
        return 0 if code in (0, None) else code
    except KeyboardInterrupt:
        print("[cosmos-triton] interrupted again: killing tritonserver", file=sys.stderr, flush=True)
        if handle is not None:
            handle.stop(kill=True)
        return 130
    except ServerError as err:
        print(f"[cosmos-triton] {err}", file=sys.stderr)
        return 1
    finally:
        if handle is not None:
            handle.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
