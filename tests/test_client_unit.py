"""Client tests without Triton: plain functions, plus whole runs against an in-process fake gRPC service.

The fake speaks Triton's real gRPC protocol (tritonclient's own protobufs), so tensor names, datatypes, shapes,
BYTES serialisation and status codes are exercised exactly as against tritonserver.
"""

import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from client import text2world as t2w

REFERENCE_DOC = Path(__file__).resolve().parents[2] / "shared" / "docs" / "cosmos-1.0-reference.md"

ENVELOPE = {
    "defaults": {
        "num_steps": 3,
        "guidance": 5.0,
        "seed": 7,
        "height": 96,
        "width": 160,
        "num_video_frames": 9,
        "fps": 12,
        "negative_prompt": "server negative",
    },
    "resolutions": [[96, 160]],
    "num_video_frames": [9],
    "fps": [12, 40],
    "num_steps": [1, 200],
    "guidance": [0.0, 100.0],
    "seed": [0, 4294967295],
}


def args_for(*argv: str) -> Any:
    return t2w.build_parser().parse_args(list(argv))


# ---------------------------------------------------------------------------------------------------------
# Arguments and defaults


def test_parser_leaves_server_defaulted_flags_unset() -> None:
    args = args_for("--prompt", "p")
    for name in t2w.SERVER_DEFAULTED:
        assert getattr(args, name) is None, name
    assert args.negative_prompt is None
    assert (args.video_save_name, args.video_save_folder) == ("output", "outputs/")
    assert (args.url, args.model, args.timeout) == ("localhost:8001", "text2world", 3600.0)


@pytest.mark.parametrize(
    "argv", [[], ["--prompt", "a", "--batch_input_path", "b.jsonl"], ["--prompt", "a", "--fps", "x"]]
)
def test_usage_errors_return_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert t2w.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_returns_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert t2w.main(["--help"]) == 0
    assert "--video_save_folder" in capsys.readouterr().out


def test_default_negative_prompt_is_the_originals() -> None:
    from cosmos_triton.request.envelope import DEFAULT_NEGATIVE_PROMPT as server_default

    assert t2w.DEFAULT_NEGATIVE_PROMPT == server_default
    if REFERENCE_DOC.is_file():  # §4.5 quotes it verbatim
        assert f'> "{t2w.DEFAULT_NEGATIVE_PROMPT}"' in REFERENCE_DOC.read_text(encoding="utf-8")


def test_unset_flags_take_the_envelope_defaults() -> None:
    req = t2w.resolve_request(args_for("--prompt", "p"), ENVELOPE, "p")
    assert req == t2w.GenerationRequest("p", "server negative", 7, 3, 5.0, 96, 160, 9, 12)


def test_given_flags_win_over_the_envelope_even_when_falsy() -> None:
    argv = ["--prompt", "p", "--seed", "0", "--guidance", "0", "--num_steps", "50", "--negative_prompt", ""]
    argv += ["--height", "704", "--width", "1280", "--num_video_frames", "121", "--fps", "40"]
    req = t2w.resolve_request(args_for(*argv), ENVELOPE, "p")
    assert req == t2w.GenerationRequest("p", "", 0, 50, 0.0, 704, 1280, 121, 40)


def test_without_envelope_the_original_defaults_apply() -> None:
    req = t2w.resolve_request(args_for("--prompt", "p"), None, "p")
    assert req == t2w.GenerationRequest("p", t2w.DEFAULT_NEGATIVE_PROMPT, 1, 35, 7.0, 704, 1280, 121, 24)


def test_partial_envelope_defaults_fill_in_per_key() -> None:
    req = t2w.resolve_request(args_for("--prompt", "p"), {"defaults": {"height": 960, "width": 960}}, "p")
    assert (req.height, req.width, req.num_steps, req.negative_prompt) == (960, 960, 35, t2w.DEFAULT_NEGATIVE_PROMPT)


def test_parse_envelope_handles_grpc_and_http_shapes() -> None:
    params = {"parameters": {"envelope": {"string_value": json.dumps(ENVELOPE)}}}
    assert t2w.parse_envelope({"config": params}) == ENVELOPE  # gRPC as_json
    assert t2w.parse_envelope(params) == ENVELOPE  # HTTP
    assert t2w.parse_envelope({"config": {}}) is None
    assert t2w.parse_envelope({"config": {"parameters": {"envelope": {"string_value": "{nope"}}}}) is None


def test_build_inputs_follow_the_contract() -> None:
    req = t2w.resolve_request(args_for("--prompt", "p"), ENVELOPE, "p")
    types = {i.name(): (i.datatype(), i.shape()) for i in t2w.build_inputs(req)}
    assert types == {
        "prompt": ("BYTES", [1]),
        "negative_prompt": ("BYTES", [1]),
        "seed": ("INT64", [1]),
        "num_steps": ("INT32", [1]),
        "guidance": ("FP32", [1]),
        "height": ("INT32", [1]),
        "width": ("INT32", [1]),
        "num_video_frames": ("INT32", [1]),
        "fps": ("INT32", [1]),
    }
    assert all(i.shape() == [1, 1] for i in t2w.build_inputs(req, batched=True))


def test_build_inputs_refuses_values_that_would_wrap() -> None:
    req = t2w.resolve_request(args_for("--prompt", "p", "--height", str(2**31)), ENVELOPE, "p")
    with pytest.raises(ValueError, match="'height' = 2147483648 does not fit the contract's INT32"):
        t2w.build_inputs(req)


# ---------------------------------------------------------------------------------------------------------
# Batch input, skipping and writing


def test_parse_batch_lines_reports_each_bad_line_and_keeps_line_indices() -> None:
    lines = [
        '{"prompt": "first"}',
        "",
        "{not json",
        '{"text": "no prompt"}',
        '["a list"]',
        '{"prompt": 3}',
        '{"prompt": "  "}',
        '{"prompt": "last", "extra": 1}',
    ]
    items, errors = t2w.parse_batch_lines(lines, "in.jsonl")
    assert items == [(0, "first"), (7, "last")]  # blank line 1 skipped but still counted
    assert len(errors) == 5
    assert errors[0].startswith("in.jsonl, line 3: invalid JSON")
    assert errors[1] == 'in.jsonl, line 4: missing "prompt" field (has: text)'
    assert "line 5: expected a JSON object" in errors[2]
    assert "line 6" in errors[3] and "non-empty string" in errors[3]
    assert "line 7" in errors[4]


def test_load_jobs_names_outputs_by_line_index(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('\ufeff{"prompt": "a"}\n\n{"prompt": "b"}\n', encoding="utf-8")  # BOM tolerated
    jobs, errors = t2w.load_jobs(args_for("--batch_input_path", str(src), "--video_save_folder", str(tmp_path)))
    assert errors == []
    assert [(j.index, j.prompt, j.video_path.name, j.text_path.name) for j in jobs] == [
        (0, "a", "0.mp4", "0.txt"),
        (2, "b", "2.mp4", "2.txt"),
    ]


def test_load_jobs_single_uses_video_save_name(tmp_path: Path) -> None:
    jobs, _ = t2w.load_jobs(args_for("--prompt", "p", "--video_save_folder", str(tmp_path), "--video_save_name", "x"))
    assert [(j.video_path, j.text_path) for j in jobs] == [(tmp_path / "x.mp4", tmp_path / "x.txt")]


def test_missing_batch_file_is_reported(tmp_path: Path) -> None:
    jobs, errors = t2w.load_jobs(args_for("--batch_input_path", str(tmp_path / "nope.jsonl")))
    assert jobs == [] and "cannot read batch input" in errors[0]


def test_skip_needs_both_outputs(tmp_path: Path) -> None:
    jobs = [t2w.Job(i, "p", *t2w.output_paths(tmp_path, str(i))) for i in range(3)]
    (tmp_path / "0.mp4").write_bytes(b"v")
    (tmp_path / "0.txt").write_text("p")
    (tmp_path / "1.mp4").write_bytes(b"v")  # an interrupted earlier run: no .txt yet
    out = io.StringIO()
    pending = t2w.pending_jobs(jobs, batch=True, out=out)
    assert [(label, j.index) for label, j in pending] == [("[2/3]", 1), ("[3/3]", 2)]
    assert "[1/3] skipped line 1" in out.getvalue()
    # single generation always overwrites, like the original
    assert len(t2w.pending_jobs(jobs[:1], batch=False, out=io.StringIO())) == 1


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.mp4"
    t2w.atomic_write(target, b"one")
    t2w.atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["a.mp4"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(t2w.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        t2w.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.txt"]


# ---------------------------------------------------------------------------------------------------------
# Progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_ticker_prints_lines_when_not_a_tty() -> None:
    out = io.StringIO()
    with t2w.Ticker("[1/1]", out, interval=0.02) as ticker:
        time.sleep(0.1)
    assert ticker.elapsed >= 0.1
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and all(line.startswith("[1/1] waiting... ") for line in lines)


def test_ticker_updates_one_line_on_a_tty() -> None:
    out = FakeTTY()
    with t2w.Ticker("[1/1]", out, interval=0.02):
        time.sleep(0.1)
    text = out.getvalue()
    assert "\n" not in text and text.count("\r[1/1] waiting") >= 2
    assert text.endswith("\r\033[K")


# ---------------------------------------------------------------------------------------------------------
# Whole runs against a fake Triton gRPC service


NUMERIC = {"INT32": np.int32, "INT64": np.int64, "FP32": np.float32}


@dataclass
class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    envelope: dict[str, Any] | None = field(default_factory=lambda: ENVELOPE)
    max_batch_size: int = 0
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        if request.name != "text2world":
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.name}' is not found")
        params = {}
        if self.envelope is not None:
            params["envelope"] = model_config_pb2.ModelParameter(string_value=json.dumps(self.envelope))
        config = model_config_pb2.ModelConfig(name=request.name, max_batch_size=self.max_batch_size, parameters=params)
        return service_pb2.ModelConfigResponse(config=config)

    def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        values = {}
        for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
            if tensor.datatype == "BYTES":
                array = deserialize_bytes_tensor(raw)
            else:
                array = np.frombuffer(raw, dtype=NUMERIC[tensor.datatype])
            values[tensor.name] = (tensor.datatype, list(tensor.shape), array.reshape(-1)[0])
        self.requests.append(values)
        time.sleep(self.delay_s)
        prompt = values["prompt"][2]
        if b"reject" in prompt:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid 'height': 100 not in [96]")
        video = b"\x00\x00\x00\x18ftypmp42 fake video for " + prompt
        outputs = [
            service_pb2.ModelInferResponse.InferOutputTensor(name=name, datatype="BYTES", shape=[1])
            for name in ("video", "prompt_used")
        ]
        raw = [serialize_byte_tensor(np.array([v], dtype=np.object_)).item() for v in (video, b"used: " + prompt)]
        return service_pb2.ModelInferResponse(model_name=request.model_name, outputs=outputs, raw_output_contents=raw)


@pytest.fixture
def fake() -> Iterator[tuple[FakeTriton, str]]:
    servicer = FakeTriton()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


def run_main(url: str, folder: Path, *argv: str) -> int:
    return t2w.main(["--url", url, "--video_save_folder", str(folder), *argv])


def test_single_generation_writes_video_and_prompt(
    fake: tuple[FakeTriton, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, url = fake
    assert run_main(url, tmp_path, "--prompt", "a robot ü", "--video_save_name", "robot", "--seed", "42") == 0
    assert (tmp_path / "robot.mp4").read_bytes().endswith("a robot ü".encode())
    assert (tmp_path / "robot.txt").read_text(encoding="utf-8") == "used: a robot ü"
    assert sorted(os.listdir(tmp_path)) == ["robot.mp4", "robot.txt"]
    sent = servicer.requests[0]
    assert sent["seed"] == ("INT64", [1], 42)  # given flag
    assert sent["height"] == ("INT32", [1], 96)  # server default
    assert sent["guidance"] == ("FP32", [1], np.float32(5.0))
    assert sent["negative_prompt"] == ("BYTES", [1], b"server negative")
    out = capsys.readouterr().out
    assert "[1/1] generating" in out and "[1/1] done in" in out and str(tmp_path / "robot.mp4") in out


def test_single_rejection_prints_server_message_and_returns_1(
    fake: tuple[FakeTriton, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = fake
    assert run_main(url, tmp_path, "--prompt", "please reject", "--height", "100") == 1
    assert "server rejected the request: invalid 'height': 100 not in [96]" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_batch_goes_on_after_errors_and_resumes(
    fake: tuple[FakeTriton, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, url = fake
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "zero"}\n{bad\n{"prompt": "reject me"}\n{"prompt": "three"}\n', encoding="utf-8")
    out_dir = tmp_path / "out"
    assert run_main(url, out_dir, "--batch_input_path", str(src)) == 1
    assert sorted(os.listdir(out_dir)) == ["0.mp4", "0.txt", "3.mp4", "3.txt"]
    captured = capsys.readouterr()
    assert "line 2: invalid JSON" in captured.err
    assert "[2/3] FAILED" in captured.err and "invalid 'height'" in captured.err
    assert "batch: 2 generated, 0 skipped, 1 failed, 1 invalid lines" in captured.out

    servicer.requests.clear()
    assert run_main(url, out_dir, "--batch_input_path", str(src)) == 1
    assert [r["prompt"][2] for r in servicer.requests] == [b"reject me"]  # only the unfinished item again
    assert "[1/3] skipped line 1" in capsys.readouterr().out


def test_finished_batch_does_not_need_the_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "zero"}\n', encoding="utf-8")
    (tmp_path / "0.mp4").write_bytes(b"v")
    (tmp_path / "0.txt").write_text("p")
    assert run_main(f"127.0.0.1:{free_port()}", tmp_path, "--batch_input_path", str(src)) == 0
    assert "batch: 0 generated, 1 skipped" in capsys.readouterr().out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(f"127.0.0.1:{free_port()}", tmp_path, "--prompt", "p") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the Triton server at 127.0.0.1:") and err.count("\n") == 1


def test_unknown_model_exits_2(
    fake: tuple[FakeTriton, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = fake
    assert run_main(url, tmp_path, "--prompt", "p", "--model", "nope") == 2
    assert "model 'nope' is not available" in capsys.readouterr().err


def test_batched_ensemble_gets_a_batch_dimension(fake: tuple[FakeTriton, str], tmp_path: Path) -> None:
    servicer, url = fake
    servicer.max_batch_size = 1
    assert run_main(url, tmp_path, "--prompt", "p") == 0
    assert all(shape == [1, 1] for _, shape, _ in servicer.requests[0].values())


def test_missing_envelope_warns_and_uses_original_defaults(
    fake: tuple[FakeTriton, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, url = fake
    servicer.envelope = None
    assert run_main(url, tmp_path, "--prompt", "p") == 0
    assert servicer.requests[0]["height"][2] == 704
    assert servicer.requests[0]["negative_prompt"][2] == t2w.DEFAULT_NEGATIVE_PROMPT.encode()
    assert "publishes no envelope" in capsys.readouterr().err


def test_timeout_is_reported_as_failure(
    fake: tuple[FakeTriton, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, url = fake
    servicer.delay_s = 1.0
    assert run_main(url, tmp_path, "--prompt", "p", "--timeout", "0.2") == 1
    assert "no answer within 0.2 s" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_run_accepts_an_injected_client(tmp_path: Path) -> None:
    # run() takes any object with the two tritonclient methods, for callers that manage their own client.
    class Result:
        def as_numpy(self, name: str) -> np.ndarray:
            return np.array([b"VIDEO" if name == "video" else b"used"], dtype=np.object_)

    class Client:
        def get_model_config(self, model: str, **_: Any) -> dict[str, Any]:
            return {"config": {"parameters": {"envelope": {"string_value": json.dumps(ENVELOPE)}}}}

        def infer(self, model: str, inputs: list[Any], **_: Any) -> Result:
            return Result()

    out, err = io.StringIO(), io.StringIO()
    assert t2w.run(args_for("--prompt", "p", "--video_save_folder", str(tmp_path)), Client(), out, err) == 0
    assert (tmp_path / "output.mp4").read_bytes() == b"VIDEO"
    assert "settings: 96x160 (HxW), 9 frames at 12 fps, 3 steps, guidance 5, seed 7" in out.getvalue()


def test_ticker_thread_is_gone_after_a_run(fake: tuple[FakeTriton, str], tmp_path: Path) -> None:
    _, url = fake
    assert run_main(url, tmp_path, "--prompt", "p") == 0
    assert not [t for t in threading.enumerate() if t.name == "t2w-ticker"]


def test_video2world_batch_lines_need_a_prompt_only_with_the_upsampler_disabled() -> None:
    from client import video2world as v2w

    lines = ['{"visual_input": "a.png"}', '{"visual_input": "b.mp4", "prompt": "go"}', '{"prompt": "no input"}', "{"]
    items, errors = v2w.parse_batch_lines(lines, "in.jsonl", need_prompt=False)
    assert items == [(0, "a.png", ""), (1, "b.mp4", "go")]
    assert len(errors) == 2 and any('line 3: missing or empty "visual_input"' in e for e in errors)
    items, errors = v2w.parse_batch_lines(lines, "in.jsonl", need_prompt=True)
    assert items == [(1, "b.mp4", "go")]
    assert any('line 1: missing or empty "prompt" (needed with --disable_prompt_upsampler)' in e for e in errors)


def test_upsampler_flags_become_request_inputs() -> None:
    args = t2w.build_parser().parse_args(["--prompt", "p", "--disable_prompt_upsampler",
                                          "--word_limit_to_skip_upsampler", "10"])
    assert t2w.upsampler_inputs(args) == (("disable_prompt_upsampler", True), ("word_limit_to_skip_upsampler", 10))
    args = t2w.build_parser().parse_args(["--prompt", "p"])
    assert t2w.upsampler_inputs(args) == (("disable_prompt_upsampler", None), ("word_limit_to_skip_upsampler", None))
