"""What the Text2World and Video2World clients share: the original CLI's common flags, talking to the server (the
streaming entry point with a progress bar, or the unary one), batch files resumed by content, atomic outputs.

Needs only tritonclient, numpy and tqdm (`pip install cosmos-triton[client]`): no torch, no model code. Input
datatypes come from the entry point's own config, and unset generation flags take the defaults the server
publishes there (its `envelope` parameter), so one client works against servers with different checkpoints.

Exit status: 0 all done, 1 a generation or input failed, 2 server unreachable / model unavailable / bad usage,
130 interrupted (the server's work is cancelled).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import queue
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from cosmos_triton.request.envelope import DEFAULT_NEGATIVE_PROMPT

EXIT_OK, EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 130
GUARDRAIL_BLOCKED = "GUARDRAIL BLOCKED"  # prefix of the server's message when a guardrail refuses a request
METADATA_TIMEOUT_S = 60.0
MANIFEST = ".cosmos_batch.json"  # content key -> output name, per output folder

# The original CLI defaults; only used for keys a server's envelope does not publish.
FALLBACK_DEFAULTS: dict[str, Any] = {"num_steps": 35, "guidance": 7.0, "seed": 1, "height": 704, "width": 1280,
                                     "num_video_frames": 121, "fps": 24, "negative_prompt": DEFAULT_NEGATIVE_PROMPT}
SERVER_DEFAULTED = ("negative_prompt", "num_steps", "guidance", "seed", "height", "width", "num_video_frames", "fps")
# The original's memory flags: here the server owns the models, so each names the server setting instead.
OFFLOAD_FLAGS = ("offload_diffusion_transformer", "offload_tokenizer", "offload_text_encoder_model",
                 "offload_prompt_upsampler", "offload_guardrail_models")


class ServerUnavailable(Exception):
    """The server cannot be reached or does not serve the model: nothing else can succeed."""


# ---------------------------------------------------------------------------------------------------------
# Flags


def add_common_flags(p: argparse.ArgumentParser, model: str) -> None:
    """The flags text2world and video2world share (the original's add_common_arguments, plus the server's)."""
    p.add_argument("--negative_prompt", default=None,
                   help=f'negative prompt (server default, the original\'s: "{DEFAULT_NEGATIVE_PROMPT[:50]}...")')
    p.add_argument("--num_steps", type=int, help="diffusion sampling steps (server default, 35)")
    p.add_argument("--guidance", type=float, help="CFG guidance scale (server default, 7.0)")
    p.add_argument("--num_video_frames", type=int, help="number of frames (server default, 121)")
    p.add_argument("--height", type=int, help="video height (server default, 704)")
    p.add_argument("--width", type=int, help="video width (server default, 1280)")
    p.add_argument("--fps", type=int, help="frames per second (server default, 24)")
    p.add_argument("--seed", type=int, help="random seed (server default, 1)")
    p.add_argument("--disable_prompt_upsampler", action="store_true",
                   help="use the prompt as given (the server upsamples by default, like the original)")
    p.add_argument("--video_save_name", default="output", help="output file name for single generation")
    p.add_argument("--video_save_folder", default="outputs/", help="output folder")
    p.add_argument("--url", default="localhost:8001", help="Triton gRPC endpoint, host:port")
    p.add_argument("--model", default=model, help="entry point (its streaming twin is <model>_stream)")
    p.add_argument("--no_stream", action="store_true",
                   help="call the unary entry point (no progress) instead of the streaming one")
    p.add_argument("--priority", type=int, choices=[1, 2], help="1 is served before the default 2")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for one video (default 3600)")
    p.add_argument("--prompt_upsampler_dir", help="accepted for compatibility: the server chooses the upsampler")
    for flag in OFFLOAD_FLAGS:
        p.add_argument(f"--{flag}", action="store_true", help="accepted for compatibility: a server setting")


def server_side_notes(args: argparse.Namespace, err: TextIO) -> None:
    """The original's upsampler-folder and offload flags choose what a local process loads; here the server owns
    the models, so name the server setting instead of silently ignoring them."""
    if args.prompt_upsampler_dir:
        err.write("note: the upsampler is chosen when the server starts: cosmos-serve --prompt_upsampler_dir "
                  f"(or --v2w_prompt_upsampler_dir); ignored here ({args.prompt_upsampler_dir})\n")
    for flag in OFFLOAD_FLAGS:
        if getattr(args, flag, False):
            err.write(f"note: --{flag} is a server memory setting: start the server with `cosmos-serve --{flag}` "
                      "(README, Memory); ignored here\n")


def explicit_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields the user set on the command line (unset ones take the server's defaults)."""
    fields = {name: getattr(args, name) for name in SERVER_DEFAULTED if getattr(args, name) is not None}
    if args.disable_prompt_upsampler:
        fields["disable_prompt_upsampler"] = True
    return fields


# ---------------------------------------------------------------------------------------------------------
# Jobs, batch files and outputs


@dataclass
class Job:
    """One video to make. `fields` are the request inputs (a Path value is sent as the file's bytes)."""

    name: str  # output stem: the --video_save_name, or the batch line index as the original names them
    fields: dict[str, Any]
    where: str = ""  # "<file>, line N" for batch items
    key: str = ""  # the content key of a batch item: what it asks for, not where it stands in the file
    video_path: Path = field(default=Path())
    text_path: Path = field(default=Path())


def content_key(fields: dict[str, Any]) -> str:
    """sha256 of the request as the user wrote it: the text fields and flags, and the bytes of a visual input."""
    canonical = {}
    for name, value in sorted(fields.items()):
        if isinstance(value, Path):
            value = "sha256:" + hashlib.sha256(value.read_bytes()).hexdigest()
        canonical[name] = value
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def read_jsonl(path: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(where, object) for every non-blank line that is a JSON object, and one message per bad line; a line that is
    not UTF-8 or not JSON fails alone."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        return [], [f"cannot read batch input {path}: {err.strerror or err}"]
    records, errors = [], []
    for index, line_bytes in enumerate(raw.removeprefix(b"\xef\xbb\xbf").split(b"\n")):
        where = f"{path}, line {index + 1}"
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.append(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})")
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(record, dict):
            errors.append(f"{where}: expected a JSON object, got {type(record).__name__}")
            continue
        records.append((where, record | {"_index": index}))
    return records, errors


def assign_outputs(jobs: list[Job], folder: Path) -> None:
    """Batch outputs are named by line index like the original, but finished work is found by content: an item
    done before under another index keeps its files, and a name held by other content gets the key as suffix."""
    manifest = _read_manifest(folder)
    taken = {name: key for key, name in manifest.items()}
    for job in jobs:
        job.key = job.key or content_key(job.fields)
        name = manifest.get(job.key)
        if name is None:
            name = job.name
            if taken.get(name, job.key) != job.key or (name not in taken and (folder / f"{name}.mp4").exists()):
                name = f"{job.name}-{job.key[:8]}"
            taken[name] = job.key
        job.name = name
        job.video_path, job.text_path = folder / f"{name}.mp4", folder / f"{name}.txt"


def _read_manifest(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def record_done(folder: Path, job: Job) -> None:
    manifest = _read_manifest(folder)
    manifest[job.key] = job.name
    atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


def is_done(job: Job) -> bool:
    """Both files exist (the .txt is written last)."""
    return job.video_path.is_file() and job.text_path.is_file()


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so an interrupted run never leaves a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual umask-based mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------------------
# The server


def _status(err: InferenceServerException) -> str:
    return str(err.status() or "").replace("StatusCode.", "")


def parse_envelope(model_config: dict[str, Any]) -> dict[str, Any] | None:
    """The `envelope` JSON of an entry point's config (get_model_config(as_json=True)); None if absent."""
    config = model_config.get("config", model_config)  # gRPC wraps the config, HTTP does not
    raw = config.get("parameters", {}).get("envelope", {}).get("string_value")
    try:
        envelope = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None
    return envelope if isinstance(envelope, dict) else None


class EntryPoint:
    """One served entry point: its input datatypes, batch dimension and defaults, read from its config."""

    def __init__(self, client: Any, model: str, url: str, stream: bool = True) -> None:
        self.client, self.model, self.url = client, model, url
        config = self._config(model, required=True)
        assert config is not None
        self.envelope = parse_envelope(config)
        self.types = {i["name"]: i["data_type"].removeprefix("TYPE_") for i in config.get("input", [])}
        self.batched = int(config.get("max_batch_size", 0) or 0) > 0
        self.stream_model = f"{model}_stream" if stream and self._config(f"{model}_stream") else None

    def _config(self, model: str, required: bool = False) -> dict[str, Any] | None:
        try:
            response = self.client.get_model_config(model, as_json=True, client_timeout=METADATA_TIMEOUT_S)
        except InferenceServerException as err:
            if _status(err) in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise ServerUnavailable(f"cannot reach the Triton server at {self.url}: {err.message()}") from err
            if required:
                raise ServerUnavailable(f"model '{model}' is not available on {self.url}: {err.message()}") from err
            return None
        return response.get("config", response)

    def defaults(self) -> dict[str, Any]:
        return {**FALLBACK_DEFAULTS, **((self.envelope or {}).get("defaults") or {})}

    def resolve(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The fields to send: the job's, then the server's published defaults for generation parameters."""
        defaults = self.defaults()
        return {**{name: defaults[name] for name in SERVER_DEFAULTED if name in defaults}, **fields}

    def inputs(self, fields: dict[str, Any]) -> list[grpcclient.InferInput]:
        """One InferInput per field, typed as the server's config declares it, shape [1] (+ batch dimension)."""
        inputs = []
        for name, value in fields.items():
            if value is None:
                continue
            if name not in self.types:
                raise ValueError(f"'{name}' is not an input of {self.model} (inputs: {', '.join(sorted(self.types))})")
            dtype = self.types[name]
            if isinstance(value, Path):
                value = value.read_bytes()
            if dtype == "STRING":
                array = np.array([value.encode("utf-8") if isinstance(value, str) else value], dtype=np.object_)
                dtype = "BYTES"
            else:
                np_type = triton_to_np_dtype(dtype)
                if np.issubdtype(np_type, np.integer) and not np.iinfo(np_type).min <= value <= np.iinfo(np_type).max:
                    # numpy would silently wrap it, sending the server a different number
                    raise ValueError(f"'{name}' = {value} does not fit the server's {dtype}")
                array = np.array([value], dtype=np_type)
            if self.batched:
                array = array[None]
            tensor = grpcclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs


def _first_bytes(result: Any, name: str) -> bytes:
    array = result.as_numpy(name)
    if array is None or array.size == 0:
        raise RuntimeError(f"server response has no '{name}' output")
    value = array.reshape(-1)[0]
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _scalar(result: Any, name: str) -> float | None:
    array = result.as_numpy(name)
    return None if array is None or array.size == 0 else float(array.reshape(-1)[0])


Progress = Callable[[int, int], None]


def _send(entry: EntryPoint, fields: dict[str, Any], on_answer: Callable[[Any, Any], None], timeout: float,
          priority: int | None) -> Callable[[], None]:
    """Start one request (streaming when the server has the streaming entry point); returns its cancel."""
    inputs = entry.inputs(fields)
    client = entry.client
    if entry.stream_model is None:
        outputs = [grpcclient.InferRequestedOutput(name) for name in ("video", "prompt_used")]
        context = client.async_infer(entry.model, inputs, callback=on_answer, outputs=outputs,
                                     client_timeout=timeout, priority=priority or 0)
        return context.cancel
    client.start_stream(callback=on_answer)
    client.async_stream_infer(entry.stream_model, inputs, priority=priority or 0)

    def cancel() -> None:
        client.stop_stream(cancel_requests=True)

    return cancel


def generate(entry: EntryPoint, fields: dict[str, Any], timeout: float, priority: int | None = None,
             progress: Progress | None = None) -> tuple[bytes, str]:
    """One generation; returns (mp4 bytes, prompt used). Streams progress when the server has the streaming entry
    point. Ctrl-C (KeyboardInterrupt) cancels the request on the server before it propagates."""
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    deadline = time.monotonic() + timeout
    client = entry.client

    def on_answer(result: Any, error: Any) -> None:  # tritonclient calls it with these keyword names
        answers.put((result, error))

    cancel = _send(entry, fields, on_answer, timeout, priority)
    try:
        while True:
            try:
                result, error = answers.get(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() > deadline:
                    cancel()
                    raise TimeoutError(f"no answer within {timeout:g} s (raise --timeout); the request was "
                                       "cancelled") from None
                continue
            if error is not None:
                raise error
            step = _scalar(result, "step") if entry.stream_model else None
            if step is not None:
                if progress is not None:
                    progress(int(step), int(_scalar(result, "total_steps") or 0))
                continue
            video = _first_bytes(result, "video")
            if not video:
                raise RuntimeError("server returned an empty video")
            return video, _first_bytes(result, "prompt_used").decode("utf-8", errors="replace")
    except KeyboardInterrupt:
        cancel()
        raise
    finally:
        if entry.stream_model is not None:
            with contextlib.suppress(Exception):
                client.stop_stream()


def describe_error(err: Exception) -> str:
    if not isinstance(err, InferenceServerException):
        return f"{type(err).__name__}: {err}" if not isinstance(err, (TimeoutError, RuntimeError)) else str(err)
    status, message = _status(err), err.message() or ""
    blocked = message.find(GUARDRAIL_BLOCKED)
    if blocked >= 0:  # the original logs this and moves on to the next prompt without writing files
        return f"guardrail blocked this generation, no video written: {message[blocked:]}"
    if status == "INVALID_ARGUMENT":
        return f"server rejected the request: {message}"
    if status == "UNAVAILABLE" and ("queue" in message or "timeout" in message.lower()):
        return f"server is busy: {message} (retry later)"
    if status == "DEADLINE_EXCEEDED":
        return "no answer in time (raise --timeout); the server stopped working on it"
    return f"server error ({status or 'unknown'}): {message}"


# ---------------------------------------------------------------------------------------------------------
# Driver


class Bar:
    """A tqdm progress bar over the denoising steps of one generation (on stderr)."""

    def __init__(self, label: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=None, desc=label, unit="step", leave=False, file=sys.stderr,
                        disable=None, mininterval=1.0)

    def __call__(self, step: int, total: int) -> None:
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = step
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def run_job(entry: EntryPoint, args: argparse.Namespace, job: Job, label: str, out: TextIO, err: TextIO) -> bool:
    """Generate and save one video; True on success. Raises ServerUnavailable if the server went away."""
    prompt = str(job.fields.get("prompt") or "(written by the server's upsampler)")
    out.write(f"{label} generating {job.video_path}: {prompt[:70]!r}\n")
    out.flush()
    start = time.monotonic()
    bar = Bar(label)
    try:
        video, prompt_used = generate(entry, entry.resolve(job.fields), args.timeout, args.priority, bar)
        failure = None
    except InferenceServerException as exc:
        if _status(exc) == "UNAVAILABLE" and "queue" not in (exc.message() or ""):
            raise ServerUnavailable(f"lost the Triton server at {args.url}: {exc.message()}") from exc
        failure = describe_error(exc)
    except (RuntimeError, ValueError, OSError, TimeoutError) as exc:  # OSError: an unreadable input file
        failure = describe_error(exc)
    finally:
        bar.close()
    elapsed = time.monotonic() - start
    if failure is not None:
        err.write(f"{label} FAILED after {elapsed:.1f} s: {failure}\n")
        return False
    atomic_write(job.video_path, video)
    atomic_write(job.text_path, prompt_used.encode("utf-8"))
    if job.key:
        record_done(job.video_path.parent, job)
    out.write(f"{label} done in {elapsed:.1f} s -> {job.video_path} (prompt in {job.text_path.name})\n")
    return True


JobsLoader = Callable[[argparse.Namespace], tuple[list[Job], list[str]]]


def run(args: argparse.Namespace, client: Any, load_jobs: JobsLoader, out: TextIO | None = None,
        err: TextIO | None = None) -> int:
    """Everything after argument parsing; `client` is a tritonclient gRPC client (or a test double)."""
    out = out or sys.stdout  # resolved per call so captured/redirected streams are honoured
    err = err or sys.stderr
    batch = args.batch_input_path is not None
    server_side_notes(args, err)
    jobs, input_errors = load_jobs(args)
    for message in input_errors:
        err.write(f"error: {message}\n")
    folder = Path(args.video_save_folder)
    if batch:
        assign_outputs(jobs, folder)
    else:
        for job in jobs:
            job.video_path, job.text_path = folder / f"{job.name}.mp4", folder / f"{job.name}.txt"
    pending: list[tuple[str, Job]] = []
    first_of: dict[str, str] = {}
    for k, job in enumerate(jobs, start=1):
        label = f"[{k}/{len(jobs)}]"
        if batch and is_done(job):
            out.write(f"{label} skipped {job.where}: done before as {job.video_path.name}\n")
        elif batch and job.key in first_of:
            out.write(f"{label} skipped {job.where}: the same request as {first_of[job.key]}\n")
        else:
            first_of[job.key] = job.where
            pending.append((label, job))
    generated = failed = 0
    if pending:
        entry = EntryPoint(client, args.model, args.url, stream=not args.no_stream)
        if entry.envelope is None:
            err.write(f"warning: '{args.model}' publishes no envelope; using the original CLI defaults\n")
        for label, job in pending:
            if run_job(entry, args, job, label, out, err):
                generated += 1
            else:
                failed += 1
    if batch:
        out.write(f"batch: {generated} generated, {len(jobs) - len(pending)} skipped, {failed} failed, "
                  f"{len(input_errors)} invalid lines -> {args.video_save_folder}\n")
    return EXIT_FAILED if failed or input_errors else EXIT_OK


def main(argv: Sequence[str] | None, build_parser: Callable[[], argparse.ArgumentParser],
         load_jobs: JobsLoader) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and usage errors; return instead for in-process callers
        return int(exc.code or 0)
    client = grpcclient.InferenceServerClient(url=args.url)
    try:
        return run(args, client, load_jobs)
    except ServerUnavailable as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_UNAVAILABLE
    except OSError as exc:  # cannot write outputs: every later item would fail the same way
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: the server's work was cancelled; completed outputs are kept, rerun to "
                         "continue a batch\n")
        return EXIT_INTERRUPTED
    finally:
        client.close()
