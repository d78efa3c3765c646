"""Production behaviour through the real launcher (`python -m cosmos_triton.server`) on the small checkpoints:
streaming progress and cancellation, queue limits, our metrics, a killed stage restored, graceful drain.

One launcher for the module, with one generation at a time and one queue slot per entry point, so that queueing
and cancellation are observable; the drain test stops it and runs last.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from cosmos_triton.server.supervisor import metric_sum, stub_instances

pytestmark = pytest.mark.slow
PROMPT = "A robot walks through a warehouse full of boxes."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Launcher:
    def __init__(self, small_settings, log: Path) -> None:
        self.ports = {name: free_port() for name in ("http", "grpc", "metrics", "health")}
        self.log = log
        cmd = [sys.executable, "-m", "cosmos_triton.server", "--checkpoint_dir", small_settings.checkpoint_dir,
               "--diffusion_transformer_dir", small_settings.dit_dir,
               "--v2w_diffusion_transformer_dir", small_settings.v2w_dit_dir,
               "--http-port", str(self.ports["http"]), "--grpc-port", str(self.ports["grpc"]),
               "--metrics-port", str(self.ports["metrics"]), "--health-port", str(self.ports["health"]),
               "--entry-instances", "1", "--max-queue-size", "1", "--drain-timeout", "120"]
        self.process = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while self.health("ready") != 200:
            assert self.process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "not ready in 300 s"
            time.sleep(0.5)

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.ports['grpc']}"

    def health(self, which: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['health']}/health/{which}", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return 0

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metrics']}/metrics", timeout=10) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        return metric_sum(self.metrics(), name, **labels)

    def server_pid(self) -> int:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid), "-f", "tritonserver"], capture_output=True,
                             text=True, check=False).stdout.split()
        return int(out[0])


@pytest.fixture(scope="module")
def launcher(small_settings, tmp_path_factory) -> Iterator[Launcher]:
    handle = Launcher(small_settings, tmp_path_factory.mktemp("launcher") / "launcher.log")
    yield handle
    if handle.process.poll() is None:
        handle.process.send_signal(signal.SIGINT)
        handle.process.wait(120)


def inputs(**fields: object) -> list[grpcclient.InferInput]:
    values = {"prompt": PROMPT, "disable_prompt_upsampler": True, **fields}
    out = []
    for name, value in values.items():
        if isinstance(value, str):
            array, dtype = np.array([[value.encode()]], dtype=np.object_), "BYTES"
        elif isinstance(value, bool):
            array, dtype = np.array([[value]], dtype=np.bool_), "BOOL"
        else:
            array, dtype = np.array([[value]], dtype=np.int64 if name == "seed" else np.int32), \
                "INT64" if name == "seed" else "INT32"
        tensor = grpcclient.InferInput(name, [1, 1], dtype)
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


class Stream:
    """One streaming request with its responses in a queue."""

    def __init__(self, url: str, **fields: object) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.responses: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.responses.put((result, error)))
        self.client.async_stream_infer("text2world_stream", inputs(**fields))

    def next(self, timeout: float = 120) -> tuple:
        return self.responses.get(timeout=timeout)

    def cancel(self) -> None:
        self.client.stop_stream(cancel_requests=True)
        self.client.close()


def test_health_is_ready(launcher):
    assert launcher.health("live") == 200 and launcher.health("ready") == 200


def test_stream_reports_each_step_then_the_video(launcher):
    stream = Stream(launcher.grpc_url, num_steps=3)
    steps = []
    while True:
        result, error = stream.next()
        assert error is None, error
        if result.as_numpy("step") is None:
            break
        steps.append((int(result.as_numpy("step").reshape(-1)[0]), int(result.as_numpy("total_steps")[0][0])))
        assert float(result.as_numpy("eta_s")[0][0]) >= 0
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # 3 steps + the final clean x0
    assert result.as_numpy("video")[0][0][4:8] == b"ftyp"
    assert result.as_numpy("prompt_used")[0][0].decode() == PROMPT
    stream.cancel()


def _wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


def test_cancelling_a_stream_stops_the_work_within_a_step_and_frees_the_server(launcher):
    cancelled_before = launcher.metric("cosmos_generations_total", entry="text2world_stream", outcome="cancelled")
    stream = Stream(launcher.grpc_url, num_steps=150)
    for _ in range(2):
        _, error = stream.next()
        assert error is None
    stream.cancel()
    assert _wait_for(lambda: launcher.metric("cosmos_generations_total", entry="text2world_stream",
                                             outcome="cancelled") > cancelled_before)
    evaluations = launcher.metric("nv_inference_count", model="dit_step")
    time.sleep(2)
    assert launcher.metric("nv_inference_count", model="dit_step") == evaluations  # no DiT work after the cancel
    # the one entry instance is free again: a short request is served at once
    client = grpcclient.InferenceServerClient(launcher.grpc_url)
    start = time.monotonic()
    client.infer("text2world", inputs(num_steps=1), client_timeout=120)
    assert time.monotonic() - start < 60


def test_a_unary_deadline_cancels_the_work(launcher):
    client = grpcclient.InferenceServerClient(launcher.grpc_url)
    before = launcher.metric("cosmos_generations_total", entry="text2world", outcome="cancelled")
    with pytest.raises(InferenceServerException) as err:
        client.infer("text2world", inputs(num_steps=150), client_timeout=4)
    assert "Deadline" in str(err.value) or err.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert _wait_for(lambda: launcher.metric("cosmos_generations_total", entry="text2world",
                                             outcome="cancelled") > before)


def test_a_full_queue_is_refused_at_once_with_a_clear_error(launcher):
    running = Stream(launcher.grpc_url, num_steps=150)
    running.next()  # it holds the one instance of text2world_stream
    queued = Stream(launcher.grpc_url, num_steps=1)  # it takes the one queue slot
    time.sleep(1)
    refused = Stream(launcher.grpc_url, num_steps=1)
    start = time.monotonic()
    result, error = refused.next(timeout=30)
    elapsed = time.monotonic() - start
    for stream in (running, queued, refused):
        stream.cancel()
    assert result is None and error is not None
    assert "queue" in str(error).lower() and elapsed < 10, (str(error), elapsed)
    # the next test starts on a free entry point: nothing running, nothing queued
    assert _wait_for(lambda: launcher.metric("cosmos_generations_in_flight", entry="text2world_stream") == 0
                     and launcher.metric("nv_inference_pending_request_count", model="text2world_stream") == 0)


def test_our_metrics_are_on_the_metrics_port(launcher):
    text = launcher.metrics()
    for series in ("cosmos_generations_total", "cosmos_generations_in_flight", "cosmos_denoise_step_seconds_bucket",
                   "cosmos_stage_seconds_bucket", "cosmos_generation_seconds_count", "nv_inference_count"):
        assert series in text, series
    assert re.search(r'cosmos_stage_seconds_count\{[^}]*stage="t5_encoder"', text)
    client = grpcclient.InferenceServerClient(launcher.grpc_url)
    with pytest.raises(InferenceServerException, match="GUARDRAIL BLOCKED"):
        client.infer("text2world", inputs(prompt="A bloodbath in a warehouse.", num_steps=1))
    assert _wait_for(lambda: launcher.metric("cosmos_guardrail_blocks_total", guardrail="Blocklist") >= 1)


def test_a_killed_stage_is_detected_and_restored(launcher):
    stub = stub_instances(launcher.server_pid())["dit_step_0_0"]  # this server's: other test servers run beside it
    assert stub.alive
    pid = stub.pid
    os.kill(pid, signal.SIGKILL)
    assert _wait_for(lambda: launcher.health("ready") == 503, timeout=10)  # it stops claiming readiness
    deadline = time.monotonic() + 120
    while launcher.health("ready") != 200:  # it restores the stage, and is not ready before that is done
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "'dit_step' reloaded" in launcher.log.read_text()  # logged before readiness returns
    client = grpcclient.InferenceServerClient(launcher.grpc_url)
    result = client.infer("text2world", inputs(num_steps=1), client_timeout=120)
    assert result.as_numpy("video")[0][0][4:8] == b"ftyp"


def test_sigterm_drains_running_generations_then_exits_cleanly(launcher):
    stream = Stream(launcher.grpc_url, num_steps=25)
    _, error = stream.next()
    assert error is None, error  # running
    launcher.process.send_signal(signal.SIGTERM)
    assert _wait_for(lambda: launcher.health("ready") == 503, timeout=10)  # load balancers stop sending first
    client = grpcclient.InferenceServerClient(launcher.grpc_url)
    assert _wait_for(lambda: not client.is_model_ready("text2world"), timeout=30)
    with pytest.raises(InferenceServerException):  # then new work is refused while the running one finishes
        client.infer("text2world", inputs(num_steps=1), client_timeout=30)
    while True:  # the running generation finishes: its per-step internal calls are still served
        result, error = stream.next(timeout=300)
        assert error is None, error
        if result.as_numpy("video") is not None:
            break
    stream.cancel()
    assert launcher.process.wait(180) == 0
    shm_left = [p for p in Path("/dev/shm").iterdir() if p.name.startswith("cosmos_triton_")
                and str(launcher.process.pid) in p.name]
    assert not shm_left
    assert not subprocess.run(["pgrep", "-f", f"cosmos-triton-{launcher.process.pid}-"], capture_output=True,
                              check=False).stdout
