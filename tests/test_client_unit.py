"""Client tests without Triton: plain functions, plus whole runs against an in-process fake gRPC service.

The fake speaks Triton's real gRPC protocol (tritonclient's own protobufs: ModelConfig, ModelInfer and the
ModelStreamInfer stream), so tensor names, datatypes, shapes, BYTES serialisation, status codes, streaming and
stream cancellation are exercised as against tritonserver.
"""

from __future__ import annotations

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
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from cosmos_triton.client import common
from cosmos_triton.client import text2world as t2w
from cosmos_triton.client import video2world as v2w
from cosmos_triton.pipeline.model_types import OUTPUTS, PROGRESS_OUTPUTS, TEXT2WORLD
from cosmos_triton.request.envelope import DEFAULT_NEGATIVE_PROMPT

ENVELOPE = {
    "defaults": {"num_steps": 3, "guidance": 5.0, "seed": 7, "height": 96, "width": 160, "num_video_frames": 9,
                 "fps": 12, "negative_prompt": "server negative"},
    "resolutions": [[96, 160]], "num_video_frames": [9], "fps": [12, 40], "num_steps": [1, 200],
    "guidance": [0.0, 100.0], "seed": [0, 4294967295],
}
NUMERIC = {"INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "BOOL": np.bool_}


def args_for(*argv: str) -> Any:
    return t2w.build_parser().parse_args(list(argv))


# ---------------------------------------------------------------------------------------------------------
# Flags, defaults, inputs


def test_parser_leaves_server_defaulted_flags_unset() -> None:
    args = args_for("--prompt", "p")
    assert all(getattr(args, name) is None for name in common.SERVER_DEFAULTED)
    assert common.explicit_fields(args) == {}


def test_usage_errors_return_2_and_help_0() -> None:
    assert t2w.main([]) == 2
    assert t2w.main(["--prompt", "p", "--batch_input_path", "x"]) == 2
    assert t2w.main(["--help"]) == 0


def test_explicit_flags_win_over_the_servers_defaults_even_when_falsy() -> None:
    args = args_for("--prompt", "p", "--seed", "0", "--guidance", "0", "--negative_prompt", "",
                    "--disable_prompt_upsampler", "--word_limit_to_skip_upsampler", "10")
    (job,), _ = t2w.load_jobs(args)
    assert job.fields == {"prompt": "p", "seed": 0, "guidance": 0.0, "negative_prompt": "",
                          "disable_prompt_upsampler": True, "word_limit_to_skip_upsampler": 10}


def test_the_client_has_no_copy_of_the_servers_negative_prompt() -> None:
    # one home: the client imports the server's constant (a numpy-only module), the original's text
    assert common.FALLBACK_DEFAULTS["negative_prompt"] is DEFAULT_NEGATIVE_PROMPT
    assert DEFAULT_NEGATIVE_PROMPT.startswith("The video captures a series of frames showing ugly scenes")


def test_the_client_package_imports_no_model_code() -> None:
    import subprocess
    import sys

    code = ("import sys; import cosmos_triton.client.text2world, cosmos_triton.client.video2world; "
            "heavy = {'torch', 'diffusers', 'transformers', 'imageio'} & set(sys.modules); "
            "print(sorted(heavy)); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


class FakeClient:
    """Enough of a tritonclient for EntryPoint: configs by model name."""

    def __init__(self, configs: dict[str, dict[str, Any]]) -> None:
        self.configs = configs

    def get_model_config(self, model: str, **_: Any) -> dict[str, Any]:
        from tritonclient.utils import InferenceServerException

        if model not in self.configs:
            raise InferenceServerException(f"Request for unknown model: '{model}' is not found",
                                           status="StatusCode.NOT_FOUND")
        return {"config": self.configs[model]}


def entry_config(name: str = "text2world", batch: int = 1, envelope: dict | None = None) -> dict[str, Any]:
    config = {"name": name, "max_batch_size": batch,
              "input": [{"name": io.name, "data_type": f"TYPE_{io.dtype}"} for io in TEXT2WORLD.request_inputs]}
    if envelope is not None:
        config["parameters"] = {"envelope": {"string_value": json.dumps(envelope)}}
    return config


def test_inputs_take_their_datatypes_from_the_servers_config_and_refuse_wrapping() -> None:
    entry = common.EntryPoint(FakeClient({"text2world": entry_config(envelope=ENVELOPE)}), "text2world", "u")
    assert entry.stream_model is None  # no text2world_stream on this server
    fields = entry.resolve({"prompt": "p", "seed": 2**40})
    assert fields["height"] == 96 and fields["negative_prompt"] == "server negative" and fields["seed"] == 2**40
    tensors = {t.name(): t for t in entry.inputs(fields)}
    assert tensors["seed"].datatype() == "INT64" and tensors["guidance"].datatype() == "FP32"
    assert tensors["prompt"].datatype() == "BYTES" and tensors["prompt"].shape() == [1, 1]  # batch dimension
    with pytest.raises(ValueError, match="does not fit the server's INT32"):
        entry.inputs({"num_steps": 2**31})
    with pytest.raises(ValueError, match="'bogus' is not an input"):
        entry.inputs({"bogus": 1})


def test_parse_envelope_handles_grpc_and_http_shapes_and_garbage() -> None:
    raw = {"parameters": {"envelope": {"string_value": json.dumps(ENVELOPE)}}}
    assert common.parse_envelope(raw) == ENVELOPE
    assert common.parse_envelope({"config": raw}) == ENVELOPE
    assert common.parse_envelope({"parameters": {"envelope": {"string_value": "not json"}}}) is None
    assert common.parse_envelope({}) is None


# ---------------------------------------------------------------------------------------------------------
# Batch files: bad lines fail alone, resume by content


def test_jsonl_lines_fail_alone_including_bad_utf8(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'\xef\xbb\xbf{"prompt": "zero"}\n{bad\n{"prompt": "caf\xe9"}\n\n[1]\n{"text": "x"}\n'
                    b'{"prompt": "five \xc3\xbc"}\n')
    jobs, errors = t2w.load_jobs(args_for("--batch_input_path", str(src)))
    assert [(j.name, j.fields["prompt"]) for j in jobs] == [("0", "zero"), ("6", "five ü")]
    assert any("line 2: invalid JSON" in e for e in errors)
    assert any("line 3: not UTF-8" in e for e in errors)
    assert any("line 5: expected a JSON object" in e for e in errors)
    assert any('line 6: needs a non-empty "prompt" string (has: text)' in e for e in errors)
    assert len(errors) == 4


def test_resume_is_keyed_by_content_not_by_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = [common.Job("0", {"prompt": "a"}), common.Job("1", {"prompt": "b"})]
    common.assign_outputs(first, out)
    for job in first:
        common.atomic_write(job.video_path, b"v")
        common.atomic_write(job.text_path, b"t")
        common.record_done(out, job)
    # a line inserted at the top: "a" and "b" move down, the new prompt takes line 0
    second = [common.Job("0", {"prompt": "new"}), common.Job("1", {"prompt": "a"}), common.Job("2", {"prompt": "b"})]
    common.assign_outputs(second, out)
    assert [common.is_done(j) for j in second] == [False, True, True]
    assert second[1].video_path.name == "0.mp4" and second[2].video_path.name == "1.mp4"
    assert second[0].video_path.name.startswith("0-")  # never over another item's finished video
    # other parameters are other content
    third = [common.Job("0", {"prompt": "a", "seed": 3})]
    common.assign_outputs(third, out)
    assert not common.is_done(third[0])


def test_atomic_write_replaces_and_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "x.mp4"
    common.atomic_write(target, b"old")
    common.atomic_write(target, b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["x.mp4"]

    def boom(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        common.atomic_write(target, b"newer")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["x.mp4"]


def test_video2world_lines_need_a_prompt_only_with_the_upsampler_disabled(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"png")
    (tmp_path / "b.mp4").write_bytes(b"mp4")
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([json.dumps({"visual_input": str(tmp_path / "a.png")}),
                              json.dumps({"visual_input": str(tmp_path / "b.mp4"), "prompt": "go"}),
                              json.dumps({"prompt": "no input"}),
                              json.dumps({"visual_input": str(tmp_path / "missing.png")})]))
    argv = ["--batch_input_path", str(src)]
    jobs, errors = v2w.load_jobs(v2w.build_parser().parse_args(argv))
    assert [j.name for j in jobs] == ["0", "1"] and jobs[1].fields["prompt"] == "go"
    assert any('line 3: missing or empty "visual_input"' in e for e in errors)
    assert any("line 4: visual_input" in e and "not a readable file" in e for e in errors)
    jobs, errors = v2w.load_jobs(v2w.build_parser().parse_args([*argv, "--disable_prompt_upsampler"]))
    assert [j.name for j in jobs] == ["1"]
    assert any('line 1: missing or empty "prompt" (needed with --disable_prompt_upsampler)' in e for e in errors)
    # a visual input's bytes are part of the content key
    (job,), _ = v2w.load_jobs(v2w.build_parser().parse_args(["--input_image_or_video_path", str(tmp_path / "a.png")]))
    key = common.content_key(job.fields)
    (tmp_path / "a.png").write_bytes(b"another image")
    assert common.content_key(job.fields) != key


# ---------------------------------------------------------------------------------------------------------
# Whole runs against a fake Triton gRPC service


@dataclass
class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    envelope: dict[str, Any] | None = field(default_factory=lambda: ENVELOPE)
    streaming: bool = True
    delay_s: float = 0.0
    steps: int = 3
    requests: list[dict[str, Any]] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def ModelConfig(self, request: Any, context: Any) -> Any:
        name = request.name
        if name not in ("text2world", "text2world_stream") or (name.endswith("_stream") and not self.streaming):
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' is not found")
        config = mc.ModelConfig(name=name, max_batch_size=1)
        for io in TEXT2WORLD.request_inputs:
            config.input.add(name=io.name, data_type=mc.DataType.Value(f"TYPE_{io.dtype}"), dims=[1])
        if self.envelope is not None:
            config.parameters["envelope"].string_value = json.dumps(self.envelope)
        return service_pb2.ModelConfigResponse(config=config)

    def _values(self, request: Any) -> dict[str, Any]:
        values = {}
        for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
            array = deserialize_bytes_tensor(raw) if tensor.datatype == "BYTES" else np.frombuffer(
                raw, dtype=NUMERIC[tensor.datatype])
            values[tensor.name] = (tensor.datatype, list(tensor.shape), array.reshape(-1)[0])
        self.requests.append(values)
        return values

    @staticmethod
    def _response(request: Any, values: dict[str, Any]) -> Any:
        outputs, raw = [], []
        for name, value in values.items():
            io = next(io for io in OUTPUTS + PROGRESS_OUTPUTS if io.name == name)
            datatype = "BYTES" if io.dtype == "STRING" else io.dtype
            outputs.append(service_pb2.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype,
                                                                            shape=[1, 1]))
            array = np.array([value], dtype=np.object_ if datatype == "BYTES" else NUMERIC[datatype])
            raw.append(serialize_byte_tensor(array).item() if datatype == "BYTES" else array.tobytes())
        return service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id, outputs=outputs,
                                              raw_output_contents=raw)

    def _final(self, _request: Any, values: dict[str, Any]) -> dict[str, Any]:
        prompt = values["prompt"][2]
        return {"video": b"\x00\x00\x00\x18ftypmp42 fake video for " + prompt, "prompt_used": b"used: " + prompt}

    def ModelInfer(self, request: Any, context: Any) -> Any:
        values = self._values(request)
        time.sleep(self.delay_s)
        if b"reject" in values["prompt"][2]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid 'height': 100 not in [96]")
        return self._response(request, self._final(request, values))

    def ModelStreamInfer(self, request_iterator: Any, context: Any) -> Iterator[Any]:
        for request in request_iterator:
            values = self._values(request)
            if b"reject" in values["prompt"][2]:
                yield service_pb2.ModelStreamInferResponse(error_message="invalid 'height': 100 not in [96]")
                continue
            for step in range(1, self.steps + 1):
                time.sleep(self.delay_s)
                if not context.is_active():
                    self.cancelled.set()
                    return
                progress = {"step": step, "total_steps": self.steps, "elapsed_s": 0.1 * step, "eta_s": 0.0}
                yield service_pb2.ModelStreamInferResponse(infer_response=self._response(request, progress))
            yield service_pb2.ModelStreamInferResponse(infer_response=self._response(request,
                                                                                      self._final(request, values)))


@pytest.fixture
def fake() -> Iterator[tuple[FakeTriton, str]]:
    servicer = FakeTriton()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


def run_main(url: str, folder: Path, *argv: str) -> int:
    return t2w.main(["--url", url, "--video_save_folder", str(folder), *argv])


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "unary"])
def test_single_generation_writes_video_and_prompt(fake, tmp_path: Path, capsys, streaming: bool) -> None:
    servicer, url = fake
    servicer.streaming = streaming
    assert run_main(url, tmp_path, "--prompt", "a robot ü", "--video_save_name", "robot", "--seed", "42") == 0
    assert (tmp_path / "robot.mp4").read_bytes().endswith("a robot ü".encode())
    assert (tmp_path / "robot.txt").read_text(encoding="utf-8") == "used: a robot ü"
    assert sorted(os.listdir(tmp_path)) == ["robot.mp4", "robot.txt"]
    sent = servicer.requests[0]
    assert sent["seed"] == ("INT64", [1, 1], 42)  # given flag
    assert sent["height"] == ("INT32", [1, 1], 96)  # server default
    assert sent["guidance"] == ("FP32", [1, 1], np.float32(5.0))
    assert sent["negative_prompt"] == ("BYTES", [1, 1], b"server negative")
    out = capsys.readouterr().out
    assert "[1/1] generating" in out and "[1/1] done in" in out


def test_streaming_reports_every_step_to_the_progress_callback(fake) -> None:
    _, url = fake
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    entry = common.EntryPoint(client, "text2world", url)
    assert entry.stream_model == "text2world_stream"
    seen: list[tuple[int, int]] = []
    video, used = common.generate(entry, entry.resolve({"prompt": "p"}), 10, progress=lambda s, t: seen.append((s, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)] and used == "used: p" and video.endswith(b"p")
    client.close()


def test_ctrl_c_cancels_the_stream_on_the_server(fake) -> None:
    servicer, url = fake
    servicer.steps, servicer.delay_s = 50, 0.05
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    entry = common.EntryPoint(client, "text2world", url)

    def interrupt(step: int, _total: int) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        common.generate(entry, entry.resolve({"prompt": "p"}), 10, progress=interrupt)
    assert servicer.cancelled.wait(5)  # the server saw the stream end before its 50 steps
    client.close()


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "unary"])
def test_rejection_prints_the_servers_message_and_returns_1(fake, tmp_path: Path, capsys, streaming: bool) -> None:
    servicer, url = fake
    servicer.streaming = streaming
    assert run_main(url, tmp_path, "--prompt", "please reject", "--height", "100") == 1
    assert "invalid 'height': 100 not in [96]" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_batch_goes_on_after_errors_and_resumes_by_content(fake, tmp_path: Path, capsys) -> None:
    servicer, url = fake
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "zero"}\n{bad\n{"prompt": "reject me"}\n{"prompt": "three"}\n', encoding="utf-8")
    out_dir = tmp_path / "out"
    assert run_main(url, out_dir, "--batch_input_path", str(src)) == 1
    assert sorted(os.listdir(out_dir)) == [common.MANIFEST, "0.mp4", "0.txt", "3.mp4", "3.txt"]
    captured = capsys.readouterr()
    assert "line 2: invalid JSON" in captured.err
    assert "[2/3] FAILED" in captured.err and "invalid 'height'" in captured.err
    assert "batch: 2 generated, 0 skipped, 1 failed, 1 invalid lines" in captured.out

    servicer.requests.clear()
    src.write_text('{"prompt": "inserted"}\n' + src.read_text(encoding="utf-8"), encoding="utf-8")
    assert run_main(url, out_dir, "--batch_input_path", str(src)) == 1
    assert [r["prompt"][2] for r in servicer.requests] == [b"inserted", b"reject me"]
    out = capsys.readouterr().out
    assert "skipped" in out and "done before as 0.mp4" in out and "done before as 3.mp4" in out
    assert (out_dir / "0.txt").read_text() == "used: zero"  # the earlier video was not overwritten


def test_a_finished_batch_does_not_need_the_server(fake, tmp_path: Path, capsys) -> None:
    _, url = fake
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "zero"}\n', encoding="utf-8")
    assert run_main(url, tmp_path / "out", "--batch_input_path", str(src)) == 0
    assert run_main(f"127.0.0.1:{free_port()}", tmp_path / "out", "--batch_input_path", str(src)) == 0
    assert "batch: 0 generated, 1 skipped" in capsys.readouterr().out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert run_main(f"127.0.0.1:{free_port()}", tmp_path, "--prompt", "p") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the Triton server at 127.0.0.1:") and err.count("\n") == 1


def test_unknown_model_exits_2(fake, tmp_path: Path, capsys) -> None:
    _, url = fake
    assert run_main(url, tmp_path, "--prompt", "p", "--model", "nope") == 2
    assert "model 'nope' is not available" in capsys.readouterr().err


def test_missing_envelope_warns_and_uses_the_original_defaults(fake, tmp_path: Path, capsys) -> None:
    servicer, url = fake
    servicer.envelope = None
    assert run_main(url, tmp_path, "--prompt", "p") == 0
    assert servicer.requests[0]["height"][2] == 704
    assert servicer.requests[0]["negative_prompt"][2] == DEFAULT_NEGATIVE_PROMPT.encode()
    assert "publishes no envelope" in capsys.readouterr().err


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "unary"])
def test_timeout_is_reported_as_a_failure(fake, tmp_path: Path, capsys, streaming: bool) -> None:
    servicer, url = fake
    servicer.streaming, servicer.delay_s = streaming, 1.0
    assert run_main(url, tmp_path, "--prompt", "p", "--timeout", "0.3") == 1
    assert "no answer" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_offload_and_upsampler_flags_name_the_server_setting(fake, tmp_path: Path, capsys) -> None:
    _, url = fake
    assert run_main(url, tmp_path, "--prompt", "p", "--offload_diffusion_transformer",
                    "--prompt_upsampler_dir", "x") == 0
    err = capsys.readouterr().err
    assert "cosmos-serve --offload_diffusion_transformer" in err and "cosmos-serve --prompt_upsampler_dir" in err
