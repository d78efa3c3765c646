"""Launcher for tritonserver serving `model_repository/`.

    python -m cosmos_triton.server [--checkpoint_dir DIR] [--diffusion_transformer_dir NAME] [--tokenizer_dir NAME]
        [--t5_dir NAME] [--model-repository PATH] [--http-port 8000] [--grpc-port 8001] [--metrics-port 8002]
        [--log-verbose N] [-- EXTRA_TRITONSERVER_ARGS...]

Reusable from Python (tests, `make demo`):

    with running_server(ServeSettings(checkpoint_dir="checkpoints/small"), http_port=0, grpc_port=0) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

Two installations of the server are supported:
- an image whose `tritonserver` is on PATH with its own backends (NGC `nvcr.io/nvidia/tritonserver:24.10-py3`,
  backends at /opt/tritonserver/backends): used as is;
- the nvidia-pytriton wheel (`<site>/pytriton/tritonserver/bin/tritonserver`): its Python backend has no stub in
  `backends/python/`, so a per-launch backend folder is built with a symlink to the stub for the running Python
  (a symlink keeps the stub's relative RPATH to `nvidia_pytriton.libs/`).
In both cases the Python stub builds its `sys.path` from the first `python3` on PATH (PYTHONPATH is ignored), so
the running interpreter's bin directory goes first on PATH, and the server runs in the directory that holds the
`cosmos_triton` package so that the stub (whose sys.path starts with '') can import it. When the stub would embed
another libpython than the running interpreter's (pyenv Python, Debian libpython3.11), the interpreter's LIBDIR
goes first on LD_LIBRARY_PATH (see match_stub_libpython).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

from cosmos_triton.server.repository import write_repository
from cosmos_triton.settings import ServeSettings

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder from which `cosmos_triton` is importable
DEFAULT_MODEL_REPOSITORY = PACKAGE_ROOT / "model_repository"
TRITONSERVER_ENV = "COSMOS_TRITONSERVER"  # explicit path of the tritonserver binary, overrides the search

# The Python backend moves tensors through one shared-memory region per model instance; it starts at 1 MiB
# and grows 1 MiB at a time by default. Start and grow in bigger steps so multi-MB tensors (latents, mp4
# bytes) need few re-maps. The region is a sparse tmpfs file, so the size costs nothing until used.
SHM_DEFAULT_BYTES = 16 << 20
SHM_GROWTH_BYTES = 16 << 20
# GPU tensors crossing processes (ensemble steps, BLS) go through Triton's CUDA pool: 64 MB per GPU by default.
CUDA_POOL_BYTES = 1 << 30
EXIT_TIMEOUT_S = 30  # tritonserver waits this long for in-flight requests on shutdown
KILL_GRACE_S = 15  # and the launcher waits this much longer before SIGKILL
LOG_TAIL_LINES = 200
WORKDIR_PREFIX = "cosmos-triton-"  # + launcher pid: per-launch backend folder under the temp dir


class ServerError(RuntimeError):
    """The server could not be started, died, or did not become ready; the message ends with its log tail."""


# --------------------------------------------------------------------------------------------------------------
# Locating the server and preparing its environment
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TritonInstall:
    """Where the tritonserver binary is and what it needs around it."""

    binary: Path
    backends: Path | None  # the server's own backend folder (image layout); None for the wheel layout
    stubs: Path | None  # wheel: python_backend_stubs/ (one stub per Python major.minor)
    libs: Path | None  # wheel: nvidia_pytriton.libs/, needed on LD_LIBRARY_PATH by a stub that is not a symlink

    @property
    def is_wheel(self) -> bool:
        return self.stubs is not None


def _install_from_binary(binary: Path) -> TritonInstall:
    root = binary.resolve().parent.parent  # .../tritonserver (wheel) or /opt/tritonserver (image)
    stubs = root / "python_backend_stubs"
    if stubs.is_dir():
        return TritonInstall(binary, None, stubs, root.parent.parent / "nvidia_pytriton.libs")
    backends = root / "backends"
    return TritonInstall(binary, backends if backends.is_dir() else None, None, None)


def find_tritonserver(explicit: str | Path | None = None) -> TritonInstall:
    """`explicit` or $COSMOS_TRITONSERVER, else `tritonserver` on PATH, else the nvidia-pytriton wheel's binary."""
    candidates: list[Path] = []
    chosen = explicit or os.environ.get(TRITONSERVER_ENV)
    if chosen:
        candidates.append(Path(chosen).expanduser())
    elif on_path := shutil.which("tritonserver"):
        candidates.append(Path(on_path))
    else:
        # find_spec locates the wheel without importing pytriton (whose import is slow and pulls in its client)
        spec = importlib.util.find_spec("pytriton")
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                candidates.append(Path(location) / "tritonserver" / "bin" / "tritonserver")
    for binary in candidates:
        if binary.is_file() and os.access(binary, os.X_OK):
            return _install_from_binary(binary)
    tried = ", ".join(map(str, candidates)) or "nothing (no tritonserver on PATH, nvidia-pytriton not installed)"
    raise ServerError(
        f"tritonserver not found; tried {tried}. Install nvidia-pytriton, put tritonserver on PATH, "
        f"or set {TRITONSERVER_ENV}."
    )


def prepare_backend_dir(install: TritonInstall, workdir: Path) -> Path | None:
    """Backend folder to pass as --backend-directory (None: the server's default).

    Wheel layout: `<workdir>/backends/python/` with symlinks to the wheel's Python backend files plus
    `triton_python_backend_stub` -> the stub built for the running Python's major.minor.
    """
    if not install.is_wheel:
        return install.backends
    assert install.stubs is not None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.stubs / version / "triton_python_backend_stub"
    if not stub.is_file():
        have = sorted(p.name for p in install.stubs.iterdir() if p.is_dir())
        raise ServerError(f"no Python-backend stub for Python {version} in {install.stubs} (has {have})")
    source = install.binary.resolve().parent.parent / "backends" / "python"
    target = workdir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name not in ("__pycache__", "triton_python_backend_stub"):
            (target / entry.name).symlink_to(entry)
    (target / "triton_python_backend_stub").symlink_to(stub)
    return target.parent


def _linked_libpython(stub: Path, env: dict[str, str]) -> tuple[str, Path | None] | None:
    """(soname, resolved path or None when not found) of the libpython the stub links, per ldd."""
    try:
        result = subprocess.run(["ldd", str(stub)], env=env, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in result.stdout.splitlines():
        match = re.match(r"\s*(libpython3\.\d+\.so[.\d]*)\s+=>\s+(\S+)", line)
        if match:
            found = match.group(2)
            return match.group(1), None if found == "not" else Path(found).resolve()
    return None


def _own_libpython() -> Path | None:
    """The shared libpython of the running interpreter, if it was built with one."""
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not (sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname):
        return None
    path = Path(libdir) / soname
    return path.resolve() if path.is_file() else None


def match_stub_libpython(stub: Path, env: dict[str, str], log: TextIO | None = None) -> None:
    """Make the stub load the same libpython as the running interpreter (edits env["LD_LIBRARY_PATH"]).

    The stub embeds whatever libpython3.X the loader finds (the system's), but takes its stdlib from the
    `python3` on PATH. When those are different builds (a pyenv/conda Python next to Debian's libpython3.11),
    stdlib C modules fail inside the stub, e.g. `_ssl`: "undefined symbol: _PyModule_Add" (3.11.7 stdlib on
    a 3.11.2 libpython), which breaks `import diffusers`. The stub's RPATH lacks libpython, so putting the
    running interpreter's LIBDIR first on LD_LIBRARY_PATH selects the matching library.
    """
    linked = _linked_libpython(stub, env)
    own = _own_libpython()
    if linked is None or (own is not None and linked[1] == own):
        return
    if own is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(own.parent), env.get("LD_LIBRARY_PATH")]))
        return
    if linked[1] is None:
        raise ServerError(
            f"the Python-backend stub {stub} needs {linked[0]}, which is not installed, and this Python "
            f"({sys.executable}) has no shared libpython; install {linked[0]} (Debian: libpython3.X)"
        )
    if log is not None:
        print(f"[cosmos-triton] warning: the stub embeds {linked[1]}, which may not match the stdlib of "
              f"{sys.executable}", file=log)


def _environment_warnings() -> list[str]:
    """Problems of this Python environment that only show once a request reaches a Python model."""
    warnings = []
    if not (Path(sys.executable).parent / "python3").exists():
        warnings.append(f"no python3 next to {sys.executable}: the Python stub will import another "
                        "environment's packages")
    try:
        numpy_version = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        numpy_version = "0"
    # Seen with the 2.51 stub and numpy 2.5.2 (GPU image): a BYTES input kills the stub in
    # deserialize_bytes_tensor ("unpack_from requires a buffer of at least 185273103 bytes") and BYTES
    # outputs arrive empty; with numpy 1.26.4 the same models work.
    if int(numpy_version.split(".")[0]) >= 2:
        warnings.append(f"numpy {numpy_version}: the Triton 2.51 Python stub corrupts BYTES tensors with "
                        "numpy 2; install numpy<2 (the project pins 1.26.4)")
    return warnings


def visible_gpu_count() -> int:
    """Number of GPUs the server will see, without initialising CUDA in this process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return 0
    count = 0
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
            if result.returncode == 0:
                count = sum(line.startswith("GPU ") for line in result.stdout.splitlines())
    if count == 0:
        gpus = Path("/proc/driver/nvidia/gpus")
        count = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    if count and visible is not None:
        count = min(count, len([v for v in visible.split(",") if v.strip()]))
    return count


def _remove_stale_workdirs() -> None:
    """Remove the temporary folders of launchers that were killed (SIGKILL leaves no chance to clean up)."""
    for stale in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*-*"):
        pid = stale.name.removeprefix(WORKDIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)


def free_port() -> int:
    """A port that is free now (another process may take it before the server binds: see the retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------------------------
# The running server
# --------------------------------------------------------------------------------------------------------------


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook that makes the kernel SIGTERM the server if the launcher dies without stopping it.

    Linux only (PR_SET_PDEATHSIG). Caveat: the "parent" is the thread that forked, so start servers from a
    thread that outlives them (the main thread in the CLI and in tests).
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child should only call it
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG

    return hook


@dataclass
class ServerHandle:
    """A started tritonserver process. URLs are "host:port" as tritonclient expects them."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int
    workdir: Path
    shm_prefix: str
    exit_timeout_s: int = EXIT_TIMEOUT_S
    host: str = "localhost"
    _tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES))
    _reader: threading.Thread | None = None
    _stopped: bool = False

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(list(self._tail)[-lines:])

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=5) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def models(self) -> list[dict[str, str]]:
        """The repository index (name, version, state) as the server reports it."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/v2/repository/index", data=b"{}")
        with urllib.request.urlopen(request, timeout=10) as r:
            return list(json.loads(r.read()))

    def wait_ready(self, timeout_s: float) -> None:
        """Block until /v2/health/ready answers 200 (with --strict-readiness: every model loaded)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                self._join_reader()
                raise ServerError(f"tritonserver exited with code {self.process.returncode} before it was "
                                  f"ready; last log lines:\n{self.log_tail()}")
            if self.is_ready():
                return
            if time.monotonic() > deadline:
                raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s; last log lines:\n"
                                  f"{self.log_tail()}")
            time.sleep(0.25)

    def stop(self, sig: int = signal.SIGTERM, kill: bool = False) -> int | None:
        """Ask the server to exit (it drains in-flight requests for up to exit_timeout_s), SIGKILL it if it
        does not (or at once with kill=True), and remove the launch's temporary files. Returns the exit code;
        safe to call again, also after an interrupted call."""
        if not self._stopped:
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGKILL if kill else sig)
                try:
                    self.process.wait(self.exit_timeout_s + KILL_GRACE_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self._join_reader()
            self._cleanup()
            self._stopped = True
        return self.process.returncode

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)

    def _cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        # shared-memory regions of stubs that were killed rather than shut down
        for leftover in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pump_log(pipe: IO[bytes], tail: collections.deque[str], echo: TextIO | None, log_file: Path | None) -> None:
    """Copy the server's output line by line to the echo stream and the log file, keeping a tail for errors."""
    with open(log_file, "a", encoding="utf-8") if log_file else contextlib.nullcontext() as sink:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            for out in (echo, sink):
                if out is not None:
                    out.write(line + "\n")
                    out.flush()


def build_command(
    install: TritonInstall,
    model_repository: Path,
    backend_dir: Path | None,
    ports: tuple[int, int, int],
    *,
    shm_prefix: str,
    gpus: int,
    log_verbose: int = 0,
    exit_timeout_s: int = EXIT_TIMEOUT_S,
    extra_args: Sequence[str] = (),
) -> list[str]:
    http_port, grpc_port, metrics_port = ports
    cmd = [
        str(install.binary),
        f"--model-repository={model_repository}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        "--strict-readiness=true",  # ready only when every model is loaded
        f"--exit-timeout-secs={exit_timeout_s}",
        # configs come complete from cosmos_triton.server.repository; auto-complete would start one extra stub per
        # Python model that imports model.py (torch, diffusers) just to read its config: twice the load time
        "--disable-auto-complete-config",
        f"--backend-config=python,shm-default-byte-size={SHM_DEFAULT_BYTES}",
        f"--backend-config=python,shm-growth-byte-size={SHM_GROWTH_BYTES}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",  # lets stop() find leftovers
        f"--log-verbose={log_verbose}",
    ]
    if backend_dir is not None:
        cmd.append(f"--backend-directory={backend_dir}")
    if gpus:
        cmd += [f"--cuda-memory-pool-byte-size={gpu}:{CUDA_POOL_BYTES}" for gpu in range(gpus)]
    else:
        # without a GPU these only produce warnings (pinned memory needs CUDA, GPU metrics need NVML/DCGM)
        cmd += ["--pinned-memory-pool-byte-size=0", "--allow-gpu-metrics=false"]
    return cmd + list(extra_args)


def build_env(settings: ServeSettings, install: TritonInstall) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings.to_env())
    # the stub imports what the first `python3` on PATH would import; make that this interpreter
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir] + [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bindir])
    if install.is_wheel and install.libs is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [env.get("LD_LIBRARY_PATH"), str(install.libs)]))
    env.setdefault("PYTHONUNBUFFERED", "1")  # model print() output shows up in the server log as it happens
    if visible_gpu_count() == 0:
        # Every stage is its own process with its own OpenMP pool; with one pool per core-count each, a busy
        # neighbour (a client, perf_analyzer) makes their spin-waiting barriers collapse: measured on 2 cores,
        # perf_analyzer p95 58 s per video with the default vs 4.7 s with one thread per stage.
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def start_server(
    settings: ServeSettings | None = None,
    model_repository: str | Path | None = None,
    *,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    log_file: str | Path | None = None,
    echo: TextIO | None = None,
    log_verbose: int = 0,
    exit_timeout_s: int = EXIT_TIMEOUT_S,
    extra_args: Sequence[str] = (),
    tritonserver: str | Path | None = None,
) -> ServerHandle:
    """Start tritonserver (not waiting for readiness). Port 0 means "pick a free port".

    `settings` (default: from the environment) is exported as COSMOS_* variables with an absolute checkpoint dir.
    The server log goes to `log_file` (appended) and/or the `echo` stream; its tail is always kept for errors.
    """
    settings = (settings or ServeSettings.from_env()).resolved()
    install = find_tritonserver(tritonserver)
    _remove_stale_workdirs()
    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
    try:
        if model_repository is None:
            # Render the configs for these checkpoints (their envelope is what clients read) beside the model code.
            repository = write_repository(workdir / "model_repository", settings)
        else:
            repository = Path(model_repository).expanduser().resolve()
            if not repository.is_dir():
                raise ServerError(f"model repository {repository} does not exist")
        backend_dir = prepare_backend_dir(install, workdir)
        env = build_env(settings, install)
        if backend_dir is not None and (stub := backend_dir / "python" / "triton_python_backend_stub").exists():
            match_stub_libpython(stub, env, echo)
        for warning in _environment_warnings():
            print(f"[cosmos-triton] warning: {warning}", file=echo or sys.stderr, flush=True)
        ports = (http_port or free_port(), grpc_port or free_port(), metrics_port or free_port())
        shm_prefix = f"cosmos_triton_{workdir.name.removeprefix(WORKDIR_PREFIX).replace('-', '_')}_"
        cmd = build_command(install, repository, backend_dir, ports, shm_prefix=shm_prefix,
                            gpus=visible_gpu_count(), log_verbose=log_verbose, exit_timeout_s=exit_timeout_s,
                            extra_args=extra_args)
        process = subprocess.Popen(
            cmd,
            env=env,
            cwd=PACKAGE_ROOT,  # '' on the stub's sys.path: `import cosmos_triton` works without installing it
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal Ctrl-C reaches the launcher only, which forwards it once
            preexec_fn=_parent_death_signal(),
        )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    handle = ServerHandle(process, *ports, workdir=workdir, shm_prefix=shm_prefix, exit_timeout_s=exit_timeout_s)
    handle._reader = threading.Thread(
        target=_pump_log, args=(process.stdout, handle._tail, echo, Path(log_file) if log_file else None),
        name="tritonserver-log", daemon=True,
    )
    handle._reader.start()
    return handle


@contextlib.contextmanager
def running_server(
    settings: ServeSettings | None = None,
    model_repository: str | Path | None = None,
    *,
    http_port: int = 0,
    grpc_port: int = 0,
    metrics_port: int = 0,
    log_file: str | Path | None = None,
    echo: TextIO | None = None,
    log_verbose: int = 0,
    ready_timeout_s: float = 300.0,
    exit_timeout_s: int = EXIT_TIMEOUT_S,
    extra_args: Sequence[str] = (),
    tritonserver: str | Path | None = None,
) -> Iterator[ServerHandle]:
    """A ready server for the duration of the block, stopped afterwards. Ports default to free ones (0).

    A port picked here may be taken by someone else before the server binds it; that start is retried.
    """
    auto_ports = 0 in (http_port, grpc_port, metrics_port)
    for attempt in range(3):
        handle = start_server(settings, model_repository, http_port=http_port, grpc_port=grpc_port,
                              metrics_port=metrics_port, log_file=log_file, echo=echo, log_verbose=log_verbose,
                              exit_timeout_s=exit_timeout_s, extra_args=extra_args, tritonserver=tritonserver)
        try:
            handle.wait_ready(ready_timeout_s)
            break
        except ServerError:
            handle.stop()
            if not (auto_ports and attempt < 2 and "already in use" in handle.log_tail(LOG_TAIL_LINES)):
                raise
        except BaseException:
            handle.stop()
            raise
    try:
        yield handle
    finally:
        handle.stop()


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:  # everything after a bare `--` goes to tritonserver untouched
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(
        prog="python -m cosmos_triton.server",
        description="Serve the Cosmos-1.0 text2world and video2world ensembles with tritonserver (each one whose "
        "DiT checkpoint is present). Arguments after `--` are passed "
        "to tritonserver. Checkpoint options default to $COSMOS_CHECKPOINT_DIR etc., then to the 7B checkpoints.",
    )
    parser.add_argument("--checkpoint_dir", "--checkpoint-dir", help="folder holding the checkpoint folders")
    parser.add_argument("--diffusion_transformer_dir", "--diffusion-transformer-dir",
                        help="Text2World DiT folder name")
    parser.add_argument("--v2w_diffusion_transformer_dir", "--v2w-diffusion-transformer-dir",
                        help="Video2World DiT folder name")
    parser.add_argument("--guardrail_dir", "--guardrail-dir", help="Cosmos-1.0-Guardrail folder name")
    parser.add_argument("--tokenizer_dir", "--tokenizer-dir", help="video tokenizer folder name")
    parser.add_argument("--t5_dir", "--t5-dir", help="T5 text encoder folder name")
    parser.add_argument("--model-repository", "--model_repository", default=None,
                        help=f"default: {DEFAULT_MODEL_REPOSITORY}")
    parser.add_argument("--http-port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--grpc-port", type=int, default=8001, help="0: any free port")
    parser.add_argument("--metrics-port", type=int, default=8002, help="0: any free port")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--ready-timeout", type=float, default=1800.0, help="seconds to wait for all models")
    parser.add_argument("--exit-timeout", type=int, default=EXIT_TIMEOUT_S,
                        help="seconds the server may take to finish in-flight requests on shutdown")
    parser.add_argument("--log-file", default=None, help="also append the server log to this file")
    parser.add_argument("--tritonserver", default=None,
                        help=f"tritonserver binary (default: ${TRITONSERVER_ENV}, PATH, the nvidia-pytriton wheel)")
    return parser.parse_args(argv), extra


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    base = ServeSettings.from_env()
    return ServeSettings(
        checkpoint_dir=args.checkpoint_dir or base.checkpoint_dir,
        dit_dir=args.diffusion_transformer_dir or base.dit_dir,
        tokenizer_dir=args.tokenizer_dir or base.tokenizer_dir,
        t5_dir=args.t5_dir or base.t5_dir,
        guardrail_dir=args.guardrail_dir or base.guardrail_dir,
        v2w_dit_dir=args.v2w_diffusion_transformer_dir or base.v2w_dit_dir,
    ).resolved()


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = _parse_args(sys.argv[1:] if argv is None else argv)
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
            metrics_port=args.metrics_port, log_file=args.log_file, echo=sys.stdout, log_verbose=args.log_verbose,
            exit_timeout_s=args.exit_timeout, extra_args=extra, tritonserver=args.tritonserver,
        )
        print(f"[cosmos-triton] starting {handle.process.args[0]} (pid {handle.process.pid}) with "
              f"{json.dumps(settings.to_env())}", flush=True)
        deadline = time.monotonic() + args.ready_timeout
        while not stop_requested.is_set():
            if not handle.is_alive():
                handle.stop()
                print(f"[cosmos-triton] tritonserver exited with code {handle.process.returncode}", file=sys.stderr)
                return handle.process.returncode or 1
            if handle.is_ready():
                break
            if time.monotonic() > deadline:
                print(f"[cosmos-triton] not ready after {args.ready_timeout:.0f} s; stopping", file=sys.stderr)
                handle.stop()
                return 1
            stop_requested.wait(0.5)
        if not stop_requested.is_set():
            models = ", ".join(f"{m['name']}({m.get('state', '?')})" for m in handle.models())
            print(f"[cosmos-triton] ready: HTTP http://{handle.http_url}  gRPC {handle.grpc_url}  "
                  f"metrics {handle.metrics_url}\n[cosmos-triton] models: {models}\n"
                  "[cosmos-triton] Ctrl-C to stop", flush=True)
        while not stop_requested.is_set() and handle.is_alive():
            stop_requested.wait(0.5)
        if handle.is_alive():
            print(f"[cosmos-triton] stopping (waiting up to {args.exit_timeout} s for in-flight requests)",
                  flush=True)
            code = handle.stop(signal.SIGINT if received and received[0] == signal.SIGINT else signal.SIGTERM)
            return 0 if code in (0, None) else code
        code = handle.stop()
        print(f"[cosmos-triton] tritonserver exited with code {code}", file=sys.stderr)
        return code or 1
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


if __name__ == "__main__":
    sys.exit(main())
