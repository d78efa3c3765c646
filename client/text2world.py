#!/usr/bin/env python3
"""Text2World client for the Cosmos-1.0 Triton ensemble, with the original `text2world.py` flags.

Self-contained on purpose: client machines have tritonclient, numpy and imageio but not torch or the
`cosmos_triton` package. Generation parameters left unset take the server's defaults, read from the ensemble
config's `envelope` parameter, so one client works against servers with different checkpoints.

    python client/text2world.py --prompt "A robot in a warehouse" --video_save_name robot
    python client/text2world.py --batch_input_path prompts.jsonl --video_save_folder outputs/run1

Exit status: 0 all done, 1 a generation or input failed, 2 server unreachable / model unavailable / bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

if TYPE_CHECKING:  # typing.Self needs Python 3.11 at runtime; client machines may be older
    from typing import Self

EXIT_OK, EXIT_FAILED, EXIT_UNAVAILABLE = 0, 1, 2
EXIT_INTERRUPTED = 130
GUARDRAIL_BLOCKED = "GUARDRAIL BLOCKED"  # prefix of the server's message when a guardrail refuses a request

# The original CLI's default negative prompt, verbatim (reference §4.5). Used when the server's envelope
# publishes none; an explicit --negative_prompt "" sends an empty one (zeroed unconditional embedding).
DEFAULT_NEGATIVE_PROMPT = (
    "The video captures a series of frames showing ugly scenes, static with no motion, motion blur, "
    "over-saturation, shaky footage, low resolution, grainy texture, pixelated images, poorly lit areas, "
    "underexposed and overexposed scenes, poor color balance, washed out colors, choppy sequences, jerky "
    "movements, low frame rate, artifacting, color banding, unnatural transitions, outdated special effects, "
    "fake elements, unconvincing visuals, poorly edited content, jump cuts, visual noise, and flickering. "
    "Overall, the video is of poor quality."
)

# The original CLI defaults; only used for keys a server's envelope does not publish.
FALLBACK_DEFAULTS: dict[str, Any] = {
    "num_steps": 35,
    "guidance": 7.0,
    "seed": 1,
    "height": 704,
    "width": 1280,
    "num_video_frames": 121,
    "fps": 24,
}
SERVER_DEFAULTED = ("num_steps", "guidance", "seed", "height", "width", "num_video_frames", "fps")

# Wire contract (docs/CONTRACT.md): every input has dims [1].
INPUT_SPECS: dict[str, tuple[str, Any]] = {
    "prompt": ("BYTES", np.object_),
    "negative_prompt": ("BYTES", np.object_),
    "seed": ("INT64", np.int64),
    "num_steps": ("INT32", np.int32),
    "guidance": ("FP32", np.float32),
    "height": ("INT32", np.int32),
    "width": ("INT32", np.int32),
    "num_video_frames": ("INT32", np.int32),
    "fps": ("INT32", np.int32),
}
EXTRA_INPUT_SPECS: dict[str, tuple[str, Any]] = {
    "visual_input": ("BYTES", np.object_),
    "num_input_frames": ("INT32", np.int32),
    "disable_prompt_upsampler": ("BOOL", np.bool_),
    "word_limit_to_skip_upsampler": ("INT32", np.int32),
}
OUTPUT_NAMES = ("video", "prompt_used")

METADATA_TIMEOUT_S = 60.0


# ---------------------------------------------------------------------------------------------------------
# Arguments and settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Generate videos from text with the Cosmos-1.0 Text2World Triton ensemble.",
        epilog="Flags marked 'server default' fall back to the defaults the server publishes for its checkpoint.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="text prompt for single video generation")
    src.add_argument("--batch_input_path", help='JSONL file, one {"prompt": ...} object per line')
    p.add_argument("--word_limit_to_skip_upsampler", type=int,
                   help="skip the prompt upsampler for prompts with more words than this (server default, 250)")
    add_common_flags(p, model="text2world")
    return p


def upsampler_inputs(args: argparse.Namespace) -> tuple[tuple[str, Any], ...]:
    """Per-request upsampler controls; None leaves the server's default (upsampling on, 250 words)."""
    return (("disable_prompt_upsampler", True if args.disable_prompt_upsampler else None),
            ("word_limit_to_skip_upsampler", getattr(args, "word_limit_to_skip_upsampler", None)))


def server_side_notes(args: argparse.Namespace, err: TextIO) -> None:
    """The original's upsampler folder and offloading flags choose what a local process loads; here the server
    owns the models, so say so instead of silently ignoring them."""
    if args.prompt_upsampler_dir:
        err.write(f"note: --prompt_upsampler_dir is chosen when the server starts (COSMOS_*_UPSAMPLER_DIR); "
                  f"ignored here ({args.prompt_upsampler_dir})\n")
    if args.offload_prompt_upsampler:
        err.write("note: --offload_prompt_upsampler is a server memory setting; the server keeps models resident\n")


def add_common_flags(p: argparse.ArgumentParser, model: str) -> None:
    """The flags text2world.py and video2world.py share (the original's add_common_arguments, plus the server)."""
    p.add_argument(
        "--negative_prompt",
        default=None,
        help="negative prompt (default: the server's, which is the original CLI's: "
        f'"{DEFAULT_NEGATIVE_PROMPT[:60]}...")',
    )
    p.add_argument("--num_steps", type=int, help="diffusion sampling steps (server default, 35)")
    p.add_argument("--guidance", type=float, help="CFG guidance scale (server default, 7.0)")
    p.add_argument("--num_video_frames", type=int, help="number of frames (server default, 121)")
    p.add_argument("--height", type=int, help="video height (server default, 704)")
    p.add_argument("--width", type=int, help="video width (server default, 1280)")
    p.add_argument("--fps", type=int, help="frames per second (server default, 24)")
    p.add_argument("--seed", type=int, help="random seed (server default, 1)")
    p.add_argument("--video_save_name", default="output", help="output file name for single generation")
    p.add_argument("--video_save_folder", default="outputs/", help="output folder")
    p.add_argument("--url", default="localhost:8001", help="Triton gRPC endpoint, host:port")
    p.add_argument("--disable_prompt_upsampler", action="store_true",
                   help="use the prompt as given (the server upsamples by default, like the original)")
    p.add_argument("--prompt_upsampler_dir", help="accepted for compatibility: the server chooses the upsampler")
    p.add_argument("--offload_prompt_upsampler", action="store_true",
                   help="accepted for compatibility: offloading is the server's memory policy")
    p.add_argument("--model", default=model, help="ensemble model name")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for one video (default 3600)")


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str
    seed: int
    num_steps: int
    guidance: float
    height: int
    width: int
    num_video_frames: int
    fps: int

    def summary(self) -> str:
        neg = "default" if self.negative_prompt == DEFAULT_NEGATIVE_PROMPT else repr(_shorten(self.negative_prompt))
        return (
            f"{self.height}x{self.width} (HxW), {self.num_video_frames} frames at {self.fps} fps, "
            f"{self.num_steps} steps, guidance {self.guidance:g}, seed {self.seed}, negative prompt {neg}"
        )


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_envelope(model_config: dict[str, Any]) -> dict[str, Any] | None:
    """The `envelope` JSON from a model config as returned by get_model_config(as_json=True); None if absent."""
    config = model_config.get("config", model_config)  # gRPC wraps the config, HTTP does not
    raw = config.get("parameters", {}).get("envelope", {}).get("string_value")
    if not raw:
        return None
    try:
        envelope = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return envelope if isinstance(envelope, dict) else None


def resolve_request(args: argparse.Namespace, envelope: dict[str, Any] | None, prompt: str) -> GenerationRequest:
    """Flags given on the command line win; the rest come from the server's envelope defaults."""
    defaults = {**FALLBACK_DEFAULTS, **((envelope or {}).get("defaults") or {})}
    values = {name: getattr(args, name) for name in SERVER_DEFAULTED}
    values = {name: defaults[name] if value is None else value for name, value in values.items()}
    negative = args.negative_prompt
    if negative is None:
        negative = defaults.get("negative_prompt", DEFAULT_NEGATIVE_PROMPT)
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=str(negative),
        seed=int(values["seed"]),
        num_steps=int(values["num_steps"]),
        guidance=float(values["guidance"]),
        height=int(values["height"]),
        width=int(values["width"]),
        num_video_frames=int(values["num_video_frames"]),
        fps=int(values["fps"]),
    )


# ---------------------------------------------------------------------------------------------------------
# Batch input and outputs


@dataclass(frozen=True)
class Job:
    index: int  # single: 0; batch: 0-based line number, which names the outputs like the original
    prompt: str
    video_path: Path
    text_path: Path
    # inputs beyond the common contract, e.g. Video2World's ("visual_input", Path) and ("num_input_frames", 9);
    # a Path value is sent as the file's bytes, read when the job runs
    extra: tuple[tuple[str, Any], ...] = ()


def output_paths(folder: str | Path, name: str) -> tuple[Path, Path]:
    folder = Path(folder)
    return folder / f"{name}.mp4", folder / f"{name}.txt"


def json_records(lines: Iterable[str], source: str) -> tuple[list[tuple[int, str, Any]], list[str]]:
    """(line index, "<source>, line N", parsed JSON) per non-blank line, and one message per line that is not JSON."""
    records: list[tuple[int, str, Any]] = []
    errors: list[str] = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        where = f"{source}, line {index + 1}"
        try:
            records.append((index, where, json.loads(line)))
        except json.JSONDecodeError as err:
            errors.append(f"{where}: invalid JSON ({err.msg} at column {err.colno})")
    return records, errors


def parse_batch_lines(lines: Iterable[str], source: str = "batch input") -> tuple[list[tuple[int, str]], list[str]]:
    """(line index, prompt) for every valid line, and one message per invalid line. Blank lines are ignored."""
    items: list[tuple[int, str]] = []
    records, errors = json_records(lines, source)
    for index, where, record in records:
        if not isinstance(record, dict):
            errors.append(f'{where}: expected a JSON object like {{"prompt": "..."}}, got {type(record).__name__}')
        elif "prompt" not in record:
            errors.append(f'{where}: missing "prompt" field (has: {", ".join(sorted(record)) or "nothing"})')
        elif not isinstance(record["prompt"], str) or not record["prompt"].strip():
            errors.append(f'{where}: "prompt" must be a non-empty string')
        else:
            items.append((index, record["prompt"]))
    return items, errors


def load_jobs(args: argparse.Namespace) -> tuple[list[Job], list[str]]:
    if args.batch_input_path is None:
        video, text = output_paths(args.video_save_folder, args.video_save_name)
        return [Job(0, args.prompt, video, text, upsampler_inputs(args))], []
    try:
        with open(args.batch_input_path, encoding="utf-8-sig") as f:  # -sig: tolerate a BOM from editors
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        return [], [f"cannot read batch input {args.batch_input_path}: {err}"]
    items, errors = parse_batch_lines(lines, source=str(args.batch_input_path))
    jobs = [Job(i, prompt, *output_paths(args.video_save_folder, str(i)), upsampler_inputs(args))
            for i, prompt in items]
    return jobs, errors


def outputs_exist(job: Job) -> bool:
    """A batch item counts as done only when both files exist; the .txt is written last."""
    return job.video_path.is_file() and job.text_path.is_file()


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so an interrupted run never leaves a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())  # mkstemp creates 0600; give the usual umask-based mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_outputs(job: Job, video: bytes, prompt: str) -> None:
    atomic_write(job.video_path, video)
    atomic_write(job.text_path, prompt.encode("utf-8"))


# ---------------------------------------------------------------------------------------------------------
# Progress


class Ticker:
    """Shows elapsed time while a blocking call runs: one updating line on a TTY, else a line every `interval` s."""

    def __init__(self, label: str, stream: TextIO, interval: float | None = None):
        self.label = label
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (1.0 if self.tty else 15.0)
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="t2w-ticker", daemon=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.tty:
                self.stream.write(f"\r{self.label} waiting... {self.elapsed:.0f} s")
            else:
                self.stream.write(f"{self.label} waiting... {self.elapsed:.0f} s\n")
            self.stream.flush()

    def __enter__(self) -> Self:
        self.start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.tty:
            self.stream.write("\r\033[K")  # clear the ticker line before the final message
            self.stream.flush()


# ---------------------------------------------------------------------------------------------------------
# Server


class ServerUnavailable(Exception):
    """The server cannot be reached or does not serve the model: nothing else can succeed."""


def _status(err: InferenceServerException) -> str:
    return str(err.status() or "").replace("StatusCode.", "")


def fetch_model_info(client: Any, model: str, url: str) -> tuple[dict[str, Any] | None, int]:
    """(envelope or None, max_batch_size) of the ensemble."""
    try:
        response = client.get_model_config(model, as_json=True, client_timeout=METADATA_TIMEOUT_S)
    except InferenceServerException as err:
        if _status(err) in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            raise ServerUnavailable(f"cannot reach the Triton server at {url}: {err.message()}") from err
        raise ServerUnavailable(f"model '{model}' is not available on {url}: {err.message()}") from err
    config = response.get("config", response)
    return parse_envelope(response), int(config.get("max_batch_size", 0) or 0)


def build_inputs(request: GenerationRequest, batched: bool = False,
                 extra: Sequence[tuple[str, Any]] = ()) -> list[grpcclient.InferInput]:
    """One InferInput per contract input, shape [1] (or [1, 1] if the ensemble declares a batch dimension)."""
    inputs = []
    values = [(name, spec, getattr(request, name)) for name, spec in INPUT_SPECS.items()]
    values += [(name, EXTRA_INPUT_SPECS[name], value) for name, value in extra if value is not None]
    for name, (triton_type, np_type), value in values:
        if isinstance(value, Path):
            value = value.read_bytes()
        if np_type is np.object_ and isinstance(value, str):
            value = value.encode("utf-8")
        elif np.issubdtype(np_type, np.integer) and not np.iinfo(np_type).min <= value <= np.iinfo(np_type).max:
            # numpy 1.x would silently wrap it, sending the server a different number
            raise ValueError(f"'{name}' = {value} does not fit the contract's {triton_type}")
        array = np.array([value], dtype=np_type)
        if batched:
            array = array[None]
        tensor = grpcclient.InferInput(name, list(array.shape), triton_type)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _first_bytes(result: Any, name: str) -> bytes:
    array = result.as_numpy(name)
    if array is None or array.size == 0:
        raise RuntimeError(f"server response has no '{name}' output")
    value = array.reshape(-1)[0]
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def generate(client: Any, model: str, request: GenerationRequest, batched: bool, timeout: float,
             extra: Sequence[tuple[str, Any]] = ()) -> tuple[bytes, str]:
    """Run one request; returns (mp4 bytes, prompt used)."""
    outputs = [grpcclient.InferRequestedOutput(name) for name in OUTPUT_NAMES]
    result = client.infer(model, build_inputs(request, batched, extra), outputs=outputs, client_timeout=timeout)
    video = _first_bytes(result, "video")
    if not video:
        raise RuntimeError("server returned an empty video")
    return video, _first_bytes(result, "prompt_used").decode("utf-8", errors="replace")


def describe_error(err: Exception, timeout: float) -> str:
    if not isinstance(err, InferenceServerException):
        return f"{type(err).__name__}: {err}"
    status = _status(err)
    blocked = err.message().find(GUARDRAIL_BLOCKED)
    if blocked >= 0:  # the original logs this and moves on to the next prompt without writing files
        return f"guardrail blocked this generation, no video written: {err.message()[blocked:]}"
    if status == "INVALID_ARGUMENT":
        return f"server rejected the request: {err.message()}"
    if status == "DEADLINE_EXCEEDED":
        return f"no answer within {timeout:g} s (raise --timeout); the server may still be working on it"
    return f"server error ({status or 'unknown'}): {err.message()}"


# ---------------------------------------------------------------------------------------------------------
# Driver


def run_job(
    client: Any,
    args: argparse.Namespace,
    request: GenerationRequest,
    job: Job,
    label: str,
    batched: bool,
    out: TextIO,
    err: TextIO,
) -> bool:
    """Generate and save one video; True on success. Raises ServerUnavailable if the server went away."""
    out.write(f"{label} generating {job.video_path}: {_shorten(job.prompt, 70)!r}\n")
    out.flush()
    with Ticker(label, out) as ticker:
        try:
            video, prompt_used = generate(client, args.model, request, batched, args.timeout, job.extra)
            failure = None
        except InferenceServerException as exc:
            if _status(exc) == "UNAVAILABLE":
                raise ServerUnavailable(f"lost the Triton server at {args.url}: {exc.message()}") from exc
            failure = describe_error(exc, args.timeout)
        except (RuntimeError, ValueError, OSError) as exc:  # OSError: an unreadable input file
            failure = str(exc)
    if failure is not None:
        err.write(f"{label} FAILED after {ticker.elapsed:.1f} s: {failure}\n")
        return False
    save_outputs(job, video, prompt_used)
    out.write(f"{label} done in {ticker.elapsed:.1f} s -> {job.video_path} (prompt in {job.text_path.name})\n")
    return True


def pending_jobs(jobs: Sequence[Job], batch: bool, out: TextIO) -> list[tuple[str, Job]]:
    """Label every job '[k/N]' and drop batch items already completed by an earlier run."""
    pending = []
    for k, job in enumerate(jobs, start=1):
        label = f"[{k}/{len(jobs)}]"
        if batch and outputs_exist(job):
            out.write(f"{label} skipped line {job.index + 1}: {job.video_path} and {job.text_path.name} exist\n")
        else:
            pending.append((label, job))
    return pending


JobsLoader = Callable[[argparse.Namespace], tuple[list[Job], list[str]]]


def run(args: argparse.Namespace, client: Any, out: TextIO | None = None, err: TextIO | None = None,
        jobs_loader: JobsLoader = load_jobs) -> int:
    """Everything after argument parsing; `client` is a tritonclient gRPC client (or a test double)."""
    out = out or sys.stdout  # resolved per call so captured/redirected streams are honoured
    err = err or sys.stderr
    batch = args.batch_input_path is not None
    server_side_notes(args, err)
    jobs, input_errors = jobs_loader(args)
    for message in input_errors:
        err.write(f"error: {message}\n")
    pending = pending_jobs(jobs, batch, out)
    generated = failed = 0
    if pending:
        envelope, max_batch_size = fetch_model_info(client, args.model, args.url)
        if envelope is None:
            err.write(f"warning: '{args.model}' publishes no envelope; using the original CLI defaults\n")
        out.write(f"settings: {resolve_request(args, envelope, '').summary()}\n")
        for label, job in pending:
            request = resolve_request(args, envelope, job.prompt)
            if run_job(client, args, request, job, label, max_batch_size > 0, out, err):
                generated += 1
            else:
                failed += 1
    if batch:
        out.write(
            f"batch: {generated} generated, {len(jobs) - len(pending)} skipped, {failed} failed, "
            f"{len(input_errors)} invalid lines -> {args.video_save_folder}\n"
        )
    return EXIT_FAILED if failed or input_errors else EXIT_OK


def main(argv: Sequence[str] | None = None, parser: Callable[[], argparse.ArgumentParser] = build_parser,
         jobs_loader: JobsLoader = load_jobs) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and usage errors; return instead for in-process callers
        return int(exc.code or 0)
    client = grpcclient.InferenceServerClient(url=args.url)
    try:
        return run(args, client, jobs_loader=jobs_loader)
    except ServerUnavailable as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_UNAVAILABLE
    except OSError as exc:  # cannot write outputs: every later item would fail the same way
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; completed outputs are kept, rerun to continue a batch\n")
        return EXIT_INTERRUPTED
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
