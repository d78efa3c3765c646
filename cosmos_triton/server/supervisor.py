"""Health that tells the truth, and a drain that lets running generations finish.

Triton 2.51 never restarts a Python stub that died (an OOM kill, a driver fault) and keeps reporting the server
and the model ready while every request to it fails. The supervisor watches the stub processes of the server it
launched (children of tritonserver; the instance name is on their command line), reloads a model whose stub is
gone through the model-control API (with the launch's admin key), and answers a liveness/readiness pair on its own
port that an orchestrator can trust:

    GET /health/live    200 while tritonserver runs and every death could be repaired; 503 when a model could
                        not be restored (restart the container)
    GET /health/ready   200 when Triton is ready, every stub alive, nothing reloading and no drain under way

Drain (SIGTERM/SIGINT): readiness goes to 503 at once, the entry points are unloaded (Triton refuses new requests
to them with UNAVAILABLE, which clients retry, and lets the running ones finish, their internal stage calls
included, since the stages stay loaded), and the launcher waits up to its drain limit before stopping the server.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from cosmos_triton.pipeline.model_types import MODEL_TYPES
from cosmos_triton.server.process import ServerHandle

STUB = "triton_python_backend_stub"
ENTRY_POINTS = tuple(name for m in MODEL_TYPES.values() for name in (m.entry, m.stream_entry))
MAX_RESTORES = 3  # failed restores of one model before liveness gives up
DRAIN_IDLE_POLLS = 3  # consecutive idle polls (0.5 s apart) that end a drain: a dequeued request is counted by then


class Stub(NamedTuple):
    model: str
    alive: bool  # not exited (a zombie counts as dead)
    pid: int


def stub_instances(server_pid: int) -> dict[str, Stub]:
    """instance name (e.g. dit_step_0_0) -> its stub process, for the Python stubs tritonserver started."""
    instances = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # after "pid (comm)": state, ppid, ...
        if len(fields) < 2 or int(fields[1]) != server_pid or not argv[0].decode(errors="replace").endswith(STUB):
            continue
        model_py = Path(argv[1].decode(errors="replace"))  # <repository>/<model>/<version>/model.py
        instance = argv[8].decode(errors="replace") if len(argv) > 8 else model_py.parent.parent.name
        instances[instance] = Stub(model_py.parent.parent.name, fields[0] != "Z", int(proc.name))
    return instances


@dataclass
class Supervisor:
    handle: ServerHandle
    interval_s: float = 1.0
    log: Callable[[str], None] = print
    draining: bool = False
    restoring: set[str] = field(default_factory=set)
    failed: dict[str, int] = field(default_factory=dict)
    restored: list[str] = field(default_factory=list)  # models reloaded so far, for logs and tests
    _known: dict[str, str] = field(default_factory=dict)  # instance -> model, every instance seen alive
    _unloaded: set[str] = field(default_factory=set)  # entry points unloaded on purpose by the drain
    _stop: threading.Event = field(default_factory=threading.Event)
    # the health thread reads what the watch thread changes: "restoring" and the known instances change together
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    # -- health -------------------------------------------------------------------------------------------------

    def live(self) -> bool:
        return self.handle.is_alive() and all(n < MAX_RESTORES for n in self.failed.values())

    def ready(self) -> bool:
        with self._lock:
            stages_ok = not self.restoring and not self._dead()
        return stages_ok and self.live() and not self.draining and self.handle.is_ready()

    def _dead(self) -> set[str]:
        """Models with an instance that was alive once and is now gone or a zombie."""
        current = stub_instances(self.handle.process.pid)
        for instance, stub in current.items():
            if stub.alive:
                self._known[instance] = stub.model
        return {model for instance, model in self._known.items()
                if not (instance in current and current[instance].alive) and model not in self._unloaded}

    # -- the watch loop ------------------------------------------------------------------------------------------

    def start(self) -> Supervisor:
        self._thread = threading.Thread(target=self._watch, name="cosmos-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self.handle.is_alive():
                return
            with contextlib.suppress(OSError):
                with self._lock:
                    dead = sorted(self._dead() - self.restoring)
                    self.restoring.update(dead)
                    for model in dead:  # its old instances are gone for good; the reload starts new ones
                        self._forget(model)
                for model in dead:
                    self._restore(model)

    def _restore(self, model: str) -> None:
        """Reload `model` (already in `restoring`, its old instances forgotten)."""
        self.log(f"[cosmos-triton] a stub of '{model}' died: reloading it")
        try:
            self.handle.load_model(model)  # explicit mode: a load of a loaded model replaces its instances
            self.restored.append(model)
            self.failed.pop(model, None)
            self.log(f"[cosmos-triton] '{model}' reloaded")
        except OSError as err:
            self.failed[model] = self.failed.get(model, 0) + 1
            self.log(f"[cosmos-triton] reloading '{model}' failed ({err}); attempt {self.failed[model]}")
        finally:
            with self._lock:
                self.restoring.discard(model)

    def _forget(self, model: str) -> None:
        for instance in [i for i, m in self._known.items() if m == model]:
            del self._known[instance]

    # -- drain ---------------------------------------------------------------------------------------------------

    def drain(self, limit_s: float) -> bool:
        """Stop taking work and wait up to `limit_s` for running generations; True if they all finished."""
        self.draining = True
        deadline = time.monotonic() + limit_s
        for entry in ENTRY_POINTS:
            self._unloaded.add(entry)
            with contextlib.suppress(OSError):
                self.handle.unload_model(entry)  # returns at once; Triton finishes the running requests
        idle_polls = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                idle_polls = idle_polls + 1 if self._entries_idle() else 0
                if idle_polls >= DRAIN_IDLE_POLLS:
                    return True
            time.sleep(0.5)
        return False

    def _entries_idle(self) -> bool:
        """Every entry point unloaded, or with nothing running (our in-flight gauge) and nothing queued (Triton's
        pending count). The second test is needed because Triton 2.51 never releases a stream request that it
        refused for a full queue: the model that request named never finishes unloading."""
        states = {m["name"]: m.get("state", "") for m in self.handle.models()}
        loaded = [e for e in ENTRY_POINTS if states.get(e, "UNAVAILABLE") != "UNAVAILABLE"]
        if not loaded:
            return True
        metrics = self.handle.metrics_text()
        return all(metric_sum(metrics, "cosmos_generations_in_flight", entry=e) == 0
                   and metric_sum(metrics, "nv_inference_pending_request_count", model=e) == 0 for e in loaded)


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the Prometheus samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def serve_health(supervisor: Supervisor, address: str, port: int) -> http.server.ThreadingHTTPServer:
    """The liveness/readiness endpoints, served from a daemon thread."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            checks = {"/health/live": supervisor.live, "/health/ready": supervisor.ready}
            if self.path not in checks:
                self.send_error(404)
                return
            ok = checks[self.path]()
            body = json.dumps({"status": "ok" if ok else "unavailable", "draining": supervisor.draining,
                               "restoring": sorted(supervisor.restoring)}).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:  # probes every few seconds: keep the log quiet
            pass

    server = http.server.ThreadingHTTPServer((address, port), Health)
    threading.Thread(target=server.serve_forever, name="cosmos-health", daemon=True).start()
    return server
