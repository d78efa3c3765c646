"""Starting, watching and stopping one tritonserver process on the rendered model repository.

    with running_server(ServeSettings(checkpoint_dir="checkpoints/small"), http_port=0, grpc_port=0) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

Per launch: a fresh internal token (only the entry points may call the stages, cosmos_triton.backend.internal) and
an admin key that guards Triton's administrative APIs (model control, repository, shared memory, logging, trace);
the launcher keeps the key to reload or drain models itself.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

from cosmos_triton.backend.internal import TOKEN_ENV
from cosmos_triton.deployment import ModelOptions, ServeSettings, ServingOptions
from cosmos_triton.server.install import (
    ServerError,
    TritonInstall,
    environment_warnings,
    find_tritonserver,
    match_stub_libpython,
    prepare_backend_dir,
    visible_gpu_count,
)
from cosmos_triton.server.repository import write_repository

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder from which `cosmos_triton` is importable

# The Python backend moves tensors through one shared-memory region per model instance; it starts at 1 MiB and
# grows 1 MiB at a time by default. Start and grow in bigger steps so multi-MB tensors (latents, mp4 bytes) need
# few re-maps. The region is a sparse tmpfs file, so the size costs nothing until used.
SHM_DEFAULT_BYTES = 16 << 20
SHM_GROWTH_BYTES = 16 << 20
# GPU tensors crossing processes go through Triton's CUDA pool: 64 MB per GPU by default.
CUDA_POOL_BYTES = 1 << 30
EXIT_TIMEOUT_S = 30  # tritonserver waits this long for in-flight requests on shutdown
KILL_GRACE_S = 15  # and the launcher waits this much longer before SIGKILL
LOG_TAIL_LINES = 200
WORKDIR_PREFIX = "cosmos-triton-"  # + launcher pid: per-launch backend folder under the temp dir
ADMIN_HEADER = "cosmos-admin-key"
# What a client may not call without the admin key. Inference, health, metadata, model config (clients read the
# entry points' envelopes) and statistics (perf_analyzer) stay open.
RESTRICTED_APIS = ("model-repository", "shared-memory", "logging", "trace")


def free_port() -> int:
    """A port that is free now (another process may take it before the server binds: see the retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _remove_stale_workdirs() -> None:
    """Remove the temporary folders of launchers that were killed (SIGKILL leaves no chance to clean up)."""
    for stale in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*-*"):
        pid = stale.name.removeprefix(WORKDIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)


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
    admin_key: str
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

    def _http(self, path: str, data: bytes | None = None, timeout: float = 10) -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data,
                                         headers={ADMIN_HEADER: self.admin_key})
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.read()

    def is_ready(self) -> bool:
        try:
            self._http("/v2/health/ready", timeout=5)
            return True
        except (OSError, urllib.error.URLError):
            return False

    def metrics_text(self) -> str:
        """The Prometheus text of the metrics port (Triton's series and the entry points' own)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def models(self) -> list[dict[str, str]]:
        """The repository index (name, version, state) as the server reports it (an admin call)."""
        return list(json.loads(self._http("/v2/repository/index", data=b"{}")))

    def load_model(self, name: str) -> None:
        """(Re)load one model through the model-control API (an admin call); blocks until it is loaded."""
        self._http(f"/v2/repository/models/{name}/load", data=b"{}", timeout=3600)

    def unload_model(self, name: str) -> None:
        self._http(f"/v2/repository/models/{name}/unload", data=b"{}", timeout=60)

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
                    self._kill_group()
                    self.process.wait()
            self._join_reader()
            self._cleanup()
            self._stopped = True
        return self.process.returncode

    def _kill_group(self) -> None:
        """SIGKILL the server and its stub processes (they share its process group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)

    def _cleanup(self) -> None:
        # stubs left behind by a killed server keep the process group alive: end them too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
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
    admin_key: str,
    address: str = "127.0.0.1",
    log_verbose: int = 0,
    exit_timeout_s: int = EXIT_TIMEOUT_S,
    extra_args: Sequence[str] = (),
) -> list[str]:
    http_port, grpc_port, metrics_port = ports
    restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={admin_key}"
    cmd = [
        str(install.binary),
        f"--model-repository={model_repository}",
        f"--http-address={address}",
        f"--grpc-address={address}",
        f"--metrics-address={address}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        "--strict-readiness=true",  # ready only when every model is loaded
        f"--exit-timeout-secs={exit_timeout_s}",
        # explicit control with every model loaded at start: the launcher can reload a model whose stub died
        "--model-control-mode=explicit",
        "--load-model=*",
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-protocol={restricted}",
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


def build_env(install: TritonInstall, token: str) -> dict[str, str]:
    env = dict(os.environ)
    env[TOKEN_ENV] = token
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
    settings: ServeSettings,
    model_repository: str | Path | None = None,
    *,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    address: str = "127.0.0.1",
    serving: ServingOptions | None = None,
    models: ModelOptions | None = None,
    admin_key: str | None = None,
    log_file: str | Path | None = None,
    echo: TextIO | None = None,
    log_verbose: int = 0,
    exit_timeout_s: int = EXIT_TIMEOUT_S,
    extra_args: Sequence[str] = (),
    tritonserver: str | Path | None = None,
) -> ServerHandle:
    """Start tritonserver (not waiting for readiness). Port 0 means "pick a free port".

    The configs are rendered for `settings` (absolute checkpoint paths) unless `model_repository` is given.
    The server log goes to `log_file` (appended) and/or the `echo` stream; its tail is always kept for errors.
    """
    settings = settings.resolved()
    install = find_tritonserver(tritonserver)
    _remove_stale_workdirs()
    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
    admin_key = admin_key or secrets.token_urlsafe(24)
    try:
        if model_repository is None:
            # Render the configs for these checkpoints (their envelope is what clients read) beside the model code.
            repository = write_repository(workdir / "model_repository", settings, options=serving, models=models)
        else:
            repository = Path(model_repository).expanduser().resolve()
            if not repository.is_dir():
                raise ServerError(f"model repository {repository} does not exist")
        backend_dir = prepare_backend_dir(install, workdir)
        env = build_env(install, secrets.token_urlsafe(32))
        if backend_dir is not None and (stub := backend_dir / "python" / "triton_python_backend_stub").exists():
            match_stub_libpython(stub, env, echo)
        for warning in environment_warnings():
            print(f"[cosmos-triton] warning: {warning}", file=echo or sys.stderr, flush=True)
        ports = (http_port or free_port(), grpc_port or free_port(), metrics_port or free_port())
        shm_prefix = f"cosmos_triton_{workdir.name.removeprefix(WORKDIR_PREFIX).replace('-', '_')}_"
        cmd = build_command(install, repository, backend_dir, ports, shm_prefix=shm_prefix,
                            gpus=visible_gpu_count(), admin_key=admin_key, address=address, log_verbose=log_verbose,
                            exit_timeout_s=exit_timeout_s, extra_args=extra_args)
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
    host = "localhost" if address in ("0.0.0.0", "127.0.0.1", "::", "") else address
    handle = ServerHandle(process, *ports, workdir=workdir, shm_prefix=shm_prefix, admin_key=admin_key,
                          exit_timeout_s=exit_timeout_s, host=host)
    handle._reader = threading.Thread(
        target=_pump_log, args=(process.stdout, handle._tail, echo, Path(log_file) if log_file else None),
        name="tritonserver-log", daemon=True,
    )
    handle._reader.start()
    return handle


@contextlib.contextmanager
def running_server(
    settings: ServeSettings,
    model_repository: str | Path | None = None,
    *,
    http_port: int = 0,
    grpc_port: int = 0,
    metrics_port: int = 0,
    ready_timeout_s: float = 300.0,
    **kwargs: object,
) -> Iterator[ServerHandle]:
    """A ready server for the duration of the block, stopped afterwards. Ports default to free ones (0); the other
    keyword arguments are start_server's. A port picked here may be taken by someone else before the server binds
    it; that start is retried."""
    auto_ports = 0 in (http_port, grpc_port, metrics_port)
    for attempt in range(3):
        handle = start_server(settings, model_repository, http_port=http_port, grpc_port=grpc_port,
                              metrics_port=metrics_port, **kwargs)  # type: ignore[arg-type]
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
