"""The committed model_repository is what the one source generates, and the flow's stage calls match the stages'
declared inputs and outputs (what Triton will check on the server)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from cosmos_triton.deployment import ServeSettings, ServingOptions
from cosmos_triton.pipeline.catalog import ENTRY_STAGES, served_model_types, stage_models
from cosmos_triton.pipeline.flow import generate
from cosmos_triton.pipeline.model_types import MODEL_TYPES, TEXT2WORLD, VIDEO2WORLD
from cosmos_triton.server.repository import HEADER, REPOSITORY_DIR, render_configs, render_models


def test_committed_repository_is_generated():
    models = render_models(ServeSettings(), tuple(MODEL_TYPES.values()))
    for name, (config, code) in models.items():
        assert (REPOSITORY_DIR / name / "config.pbtxt").read_text() == config, (
            f"{name}/config.pbtxt is stale: run `make repository`")
        assert (REPOSITORY_DIR / name / "1" / "model.py").read_text() == code
    assert {p.parent.name for p in REPOSITORY_DIR.glob("*/config.pbtxt")} == set(models)


def _parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text.removeprefix(HEADER), mc.ModelConfig())


def test_entry_points_carry_the_queue_policy_and_stages_their_checkpoints(tmp_path):
    settings = ServeSettings(checkpoint_dir=str(tmp_path))
    options = ServingOptions(entry_instances=3, max_queue_size=5, queue_timeout_s=1.5)
    configs = {name: _parse(text) for name, text in render_configs(settings, (TEXT2WORLD,), options).items()}
    assert set(configs) == {"text2world", "text2world_stream", *ENTRY_STAGES["Text2World"]}
    for name in ("text2world", "text2world_stream"):
        entry = configs[name]
        policy = entry.dynamic_batching.default_queue_policy
        assert (entry.max_batch_size, entry.instance_group[0].count) == (1, 3)
        assert (policy.max_queue_size, policy.default_timeout_microseconds) == (5, 1_500_000)
        assert policy.timeout_action == mc.ModelQueuePolicy.REJECT and policy.allow_timeout_override
        assert entry.model_transaction_policy.decoupled == name.endswith("_stream")
        assert entry.parameters["model_type"].string_value == "Text2World"
    dit = configs["dit_step"]
    assert dit.parameters["checkpoint"].string_value == str(tmp_path / settings.dit_dir)
    assert dit.parameters["stage"].string_value == "dit_step"
    assert configs["mp4_encoder"].instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


@pytest.mark.parametrize("gpus", [(), (0, 1), (2, 3, 5)])
def test_replicas_one_pipeline_per_gpu(tmp_path, gpus):
    """Every entry point and GPU stage lands on each listed GPU (count per GPU), or where Triton puts it (KIND_AUTO:
    each GPU it sees) when none is listed; the CPU stages stay one CPU instance."""
    settings = ServeSettings(checkpoint_dir=str(tmp_path))
    configs = {name: _parse(text) for name, text in
               render_configs(settings, tuple(MODEL_TYPES.values()), ServingOptions(gpus=gpus)).items()}
    specs = stage_models(settings)
    gpu_kind = mc.ModelInstanceGroup.KIND_GPU if gpus else mc.ModelInstanceGroup.KIND_AUTO
    entries = {m.entry for m in MODEL_TYPES.values()} | {m.stream_entry for m in MODEL_TYPES.values()}
    assert entries < set(configs)
    for name, config in configs.items():
        (group,) = config.instance_group
        if name in entries:
            expected = (gpu_kind, 2, list(gpus))
        elif specs[name].stage.gpu:
            expected = (gpu_kind, 1, list(gpus))
        else:
            expected = (mc.ModelInstanceGroup.KIND_CPU, 1, [])
        assert (group.kind, group.count, list(group.gpus)) == expected, name
    assert {n for n in configs if n not in entries and specs[n].stage.gpu} >= {"dit_step", "t5_encoder"}


def test_gpus_must_be_distinct_ids():
    for bad in ((0, 0), (-1,)):
        with pytest.raises(ValueError, match="gpus"):
            ServingOptions(gpus=bad)


def test_an_entry_point_without_its_checkpoint_is_not_rendered(tmp_path):
    settings = ServeSettings(checkpoint_dir=str(tmp_path))
    (tmp_path / settings.dit_dir).mkdir()
    assert served_model_types(settings) == (TEXT2WORLD,)
    assert not {"video2world", "dit_step_v2w", "tokenizer_encoder"} & set(render_configs(settings))


def test_entry_points_limit_what_is_rendered(tmp_path):
    """Both checkpoints present, one entry point asked: the stages only the other one calls get no process."""
    settings = ServeSettings(checkpoint_dir=str(tmp_path), entry_points=("text2world",))
    (tmp_path / settings.dit_dir).mkdir()
    (tmp_path / settings.v2w_dit_dir).mkdir()
    assert served_model_types(settings) == (TEXT2WORLD,)
    rendered = set(render_configs(settings))
    assert rendered == {"text2world", "text2world_stream", *ENTRY_STAGES[TEXT2WORLD.name]}
    assert {"video2world", "dit_step_v2w", "tokenizer_encoder", VIDEO2WORLD.upsampler_model}.isdisjoint(rendered)
    both = ServeSettings(checkpoint_dir=str(tmp_path))
    assert served_model_types(both) == (TEXT2WORLD, VIDEO2WORLD)
    with pytest.raises(ValueError, match=r"entry_points.*text2world, video2world"):
        served_model_types(ServeSettings(entry_points=("image2world",)))


class RecordingCall:
    """A stage call that checks every call against the stage's declared inputs and answers with dummy outputs."""

    def __init__(self) -> None:
        self.specs = stage_models(ServeSettings())
        self.calls: list[str] = []

    def __call__(self, model: str, **inputs: Any) -> dict[str, Any]:
        stage = self.specs[model].stage
        declared = {io.name for io in stage.inputs}
        required = {io.name for io in stage.inputs if not io.optional}
        assert required <= set(inputs) <= declared, (model, set(inputs) ^ declared)
        self.calls.append(model)
        latent = torch.zeros(1, 16, 16, 12, 20)
        dummy = {"prompt": "a prompt", "embedding": torch.zeros(1, 512, 1024, dtype=torch.bfloat16),
                 "x0": inputs.get("x", latent), "condition_latent": latent.to(torch.bfloat16),
                 "video": np.zeros((121, 96, 160, 3), np.uint8), "mp4": b"mp4", "cache_skipped": 0}
        return {io.name: dummy[io.name] for io in stage.outputs}


@pytest.mark.parametrize("model_type", [TEXT2WORLD, VIDEO2WORLD], ids=lambda m: m.name)
def test_the_flow_calls_only_its_entry_points_stages_with_their_declared_inputs(model_type):
    call = RecordingCall()
    req = {"prompt": "a robot", "negative_prompt": "ugly", "seed": 1, "num_steps": 2, "guidance": 7.0,
           "height": 96, "width": 160, "num_video_frames": 121, "fps": 24, "disable_prompt_upsampler": False,
           "word_limit_to_skip_upsampler": 250, "num_input_frames": 1, "cache_threshold": 0.0,
           "condition_frames": torch.zeros(1, 3, 96, 160, dtype=torch.bfloat16),
           "last_frame": np.zeros((1, 96, 160, 3), np.uint8)}
    generation = generate(model_type, call, req)
    assert generation.video == b"mp4"
    assert set(call.calls) == set(ENTRY_STAGES[model_type.name])
    assert call.calls.count(model_type.dit_model) == 3  # 2 steps + the final clean x0
    assert call.calls[-3:] == ["tokenizer_decoder", "video_guardrail", "mp4_encoder"]
