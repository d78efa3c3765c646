"""The launcher against a real tritonserver on a throwaway model repository (two tiny Python models).

Needs the tritonserver from the nvidia-pytriton wheel (or one on PATH); about 15 s on 2 CPU cores.
"""

from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from cosmos_triton.deployment import ServeSettings
from cosmos_triton.server import ServerError, running_server
from cosmos_triton.server.cli import parse_args, serving_from_args, settings_from_args

ECHO_MODEL = '''
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from cosmos_triton.backend.internal import server_token  # the stub must see the project, like the real models


class TritonPythonModel:
    def initialize(self, args):
        self.token = server_token()
        self.kind = args["model_instance_kind"]

    def execute(self, requests):
        env = json.dumps({"token_length": len(self.token), "kind": self.kind}).encode()
        return [
            pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()),
                pb_utils.Tensor("ENV", np.array([env], dtype=np.object_)),
            ])
            for r in requests
        ]
'''

REJECT_MODEL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        error = pb_utils.TritonError("height must be a multiple of 16", pb_utils.TritonError.INVALID_ARG)
        return [pb_utils.InferenceResponse(error=error) for _ in requests]
'''

BROKEN_MODEL = '''
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("checkpoint missing: boom")
'''


def _config(name: str, outputs: tuple[str, ...]) -> str:
    outs = ", ".join(f'{{ name: "{o}" data_type: TYPE_STRING dims: [1] }}' for o in outputs)
    return textwrap.dedent(f'''\
        name: "{name}"
        backend: "python"
        max_batch_size: 0
        input [ {{ name: "IN" data_type: TYPE_STRING dims: [1] }} ]
        output [ {outs} ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        ''')


def _repository(root: Path, models: dict[str, tuple[str, tuple[str, ...]]]) -> Path:
    for name, (code, outputs) in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(_config(name, outputs))
        (root / name / "1" / "model.py").write_text(code)
    return root


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _bytes_input(value: bytes) -> object:
    tensor = grpcclient.InferInput("IN", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value], dtype=np.object_))
    return tensor


def test_settings_resolve_relative_to_the_callers_folder(tmp_path: Path) -> None:
    settings = ServeSettings(checkpoint_dir="ck", dit_dir="dit", tokenizer_dir="tok", t5_dir="t5")
    assert settings.resolved(tmp_path).checkpoint_dir == str(tmp_path.resolve() / "ck")
    assert settings.resolved(tmp_path).dit_path == tmp_path.resolve() / "ck" / "dit"


def test_cli_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    args, extra = parse_args(["--checkpoint_dir", "ck", "--diffusion_transformer_dir", "small", "--grpc-port", "0",
                              "--t5-dir", "t5-small", "--max-queue-size", "3", "--queue-timeout", "2.5",
                              "--", "--log-info=false", "--model-control-mode=none"])
    assert extra == ["--log-info=false", "--model-control-mode=none"]
    assert args.grpc_port == 0
    settings = settings_from_args(args)
    assert settings.checkpoint_dir == str(tmp_path.resolve() / "ck")
    assert (settings.dit_dir, settings.t5_dir, settings.tokenizer_dir) == ("small", "t5-small",
                                                                          ServeSettings().tokenizer_dir)
    serving = serving_from_args(args)
    assert (serving.max_queue_size, serving.queue_timeout_s, serving.gpus) == (3, 2.5, ())
    assert serving_from_args(parse_args(["--gpus", "0,1"])[0]).gpus == (0, 1)
    for bad in ("0,0", "a", "0,,1", "-1"):
        with pytest.raises(SystemExit):
            parse_args(["--gpus", bad])
    assert settings.entry_points == ()
    assert settings_from_args(parse_args(["--entry_points", "text2world"])[0]).entry_points == ("text2world",)
    with pytest.raises(SystemExit):
        parse_args(["--entry_points", "image2world"])


def test_server_serves_reports_errors_and_stops(tmp_path: Path) -> None:
    repo = _repository(tmp_path / "repo", {"echo": (ECHO_MODEL, ("OUT", "ENV")), "reject": (REJECT_MODEL, ("OUT",))})
    settings = ServeSettings(checkpoint_dir=str(tmp_path / "ck"), dit_dir="Cosmos-Small", tokenizer_dir="tok")
    log_file = tmp_path / "server.log"
    with running_server(settings, repo, log_file=log_file, ready_timeout_s=60) as server:
        assert server.is_ready()
        assert {m["name"]: m["state"] for m in server.models()} == {"echo": "READY", "reject": "READY"}
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_server_ready()

        result = client.infer("echo", [_bytes_input(b"a robot arm")])
        assert result.as_numpy("OUT").tolist() == [b"a robot arm"]
        seen = json.loads(result.as_numpy("ENV")[0])
        assert seen["token_length"] >= 32  # the per-launch internal token reaches the stubs
        assert seen["kind"] == "CPU"
        # the administrative APIs need the launch's admin key: a client without it cannot unload a model
        with pytest.raises(InferenceServerException, match=r"(?i)restricted|header"):
            client.unload_model("echo")
        with pytest.raises(InferenceServerException, match=r"(?i)restricted|header"):
            client.get_model_repository_index()
        assert client.is_model_ready("echo")

        with pytest.raises(InferenceServerException) as caught:
            client.infer("reject", [_bytes_input(b"x")])
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert caught.value.message() == "height must be a multiple of 16"
        assert client.infer("echo", [_bytes_input(b"still up")]).as_numpy("OUT")[0] == b"still up"
        client.close()
        ports, workdir, shm_prefix = (server.http_port, server.grpc_port), server.workdir, server.shm_prefix

    assert server.process.returncode == 0  # graceful shutdown, not a kill
    assert not any(_port_open(port) for port in ports)
    assert not workdir.exists()
    assert not list(Path("/dev/shm").glob(f"{shm_prefix}*"))
    assert "successfully loaded 'echo'" in log_file.read_text()


def test_failed_model_load_raises_with_log(tmp_path: Path) -> None:
    repo = _repository(tmp_path / "repo", {"broken": (BROKEN_MODEL, ("OUT",))})
    with pytest.raises(ServerError, match="checkpoint missing: boom"), running_server(ServeSettings(), repo,
                                                                                       ready_timeout_s=60):
        pytest.fail("the server should not become ready")
