"""Text2World end to end through a real Triton server on the small checkpoints (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from cosmos_triton.client import text2world as client_cli
from cosmos_triton.client.common import MANIFEST
from cosmos_triton.media.mp4 import decode_mp4, encode_mp4, probe_mp4
from cosmos_triton.request.envelope import SMALL_ENVELOPE

pytestmark = pytest.mark.slow

PROMPT = "A robot walks through a warehouse full of boxes."
DTYPES = {"STRING": np.object_, "INT64": np.int64, "INT32": np.int32, "FP32": np.float32, "BF16": np.float32,
          "BOOL": np.bool_, "UINT8": np.uint8}


def infer(server, model: str, outputs: list[str], parameters: dict | None = None, **inputs):
    """Call one served model with every input as one value (a batch dimension added where the model declares
    one); bf16 travels as float32 on the client side (exact for bf16 values)."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    config = client.get_model_config(model, as_json=True)["config"]
    types = {i["name"]: i["data_type"].removeprefix("TYPE_") for i in config["input"]}
    batched = int(config.get("max_batch_size", 0)) > 0
    request = []
    for name, value in inputs.items():
        dtype = "BYTES" if types[name] == "STRING" else types[name]
        array = np.asarray(value, dtype=DTYPES[types[name]])
        if array.ndim == 0:
            array = array.reshape(1)
        if dtype == "BYTES":
            array = np.array([v.encode() if isinstance(v, str) else v for v in array], dtype=np.object_)
        if batched:
            array = array[None]
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        request.append(tensor)
    result = client.infer(model, request, outputs=[grpcclient.InferRequestedOutput(o) for o in outputs],
                          client_timeout=600, parameters=parameters)
    return [result.as_numpy(o).reshape(-1) if batched else result.as_numpy(o) for o in outputs]


def generate(server, **inputs) -> tuple[bytes, str]:
    video, used = infer(server, "text2world", ["video", "prompt_used"], **inputs)
    return video[0], used[0].decode()


def test_served_text2world_equals_the_in_process_flow_byte_for_byte(server, pipeline):
    generation = pipeline(prompt=PROMPT, seed=3)
    assert generation.prompt_used != PROMPT  # the upsampler is on by default, as in the original
    assert generation.frames.shape == (121, 96, 160, 3) and generation.frames.dtype == np.uint8
    video, used = generate(server, prompt=PROMPT, seed=3)
    assert used == generation.prompt_used
    # the mp4 of the in-process frames: x264 is deterministic on one machine, so equal bytes mean equal frames
    assert video == generation.video == encode_mp4(generation.frames, 24)


def test_disabled_or_skipped_upsampler_leaves_the_prompt_untouched(server):
    assert generate(server, prompt=PROMPT, disable_prompt_upsampler=True, num_steps=1)[1] == PROMPT
    long_prompt = " ".join(["robot"] * 251)
    assert generate(server, prompt=long_prompt, num_steps=1)[1] == long_prompt  # > 250 words: skipped
    assert generate(server, prompt=PROMPT, word_limit_to_skip_upsampler=3, num_steps=1)[1] == PROMPT


def test_two_seeds_give_different_videos(server):
    a, _ = generate(server, prompt=PROMPT, seed=1)
    b, _ = generate(server, prompt=PROMPT, seed=2)
    fa, fb = decode_mp4(a)[0], decode_mp4(b)[0]
    assert np.abs(fa.astype(int) - fb.astype(int)).mean() > 5


def test_absent_fields_get_the_envelope_defaults(server):
    video, used = generate(server, prompt=PROMPT, disable_prompt_upsampler=True)
    d = SMALL_ENVELOPE.defaults
    assert probe_mp4(video) | {"codec": None, "pix_fmt": None} == {
        "frames": d["num_video_frames"], "height": d["height"], "width": d["width"], "fps": float(d["fps"]),
        "codec": None, "pix_fmt": None}
    assert used == PROMPT
    # the defaults are the seeded default request: same bytes as spelling every default out
    explicit, _ = generate(server, prompt=PROMPT, **{**d, "disable_prompt_upsampler": True})
    assert explicit == video


def test_empty_negative_prompt_changes_the_unconditional_branch(server):
    default, _ = generate(server, prompt=PROMPT, seed=5)
    empty, _ = generate(server, prompt=PROMPT, seed=5, negative_prompt="")
    assert default != empty


@pytest.mark.parametrize("field,value,needle", [
    ("height", 100, "accepted (height x width): 96x160, 160x96, 128x128"),
    ("fps", 60, "accepted: integers in [12, 40]"),
    ("num_video_frames", 57, "accepted: [121]"),
    ("num_steps", 0, "accepted: integers in [1, 200]"),
    ("prompt", "   ", "must be a non-empty UTF-8 string"),
    ("prompt", b"\xff\xfe", "is not valid UTF-8"),
])
def test_bad_values_get_invalid_arg_naming_the_field_and_the_server_keeps_serving(server, field, value, needle):
    inputs = {"prompt": PROMPT, field: value}
    with pytest.raises(InferenceServerException) as err:
        generate(server, **inputs)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"'{field if field != 'height' else 'height/width'}'" in err.value.message()
    assert needle in err.value.message()
    assert grpcclient.InferenceServerClient(server.grpc_url).is_model_ready("text2world")


def test_ensemble_publishes_its_envelope(server):
    config = grpcclient.InferenceServerClient(server.grpc_url).get_model_config("text2world", as_json=True)["config"]
    assert json.loads(config["parameters"]["envelope"]["string_value"]) == json.loads(
        json.dumps(SMALL_ENVELOPE.to_dict()))


def test_client_single_generation_writes_the_requested_video(server, tmp_path):
    rc = client_cli.main(["--url", server.grpc_url, "--prompt", PROMPT, "--disable_prompt_upsampler",
                          "--height", "128", "--width", "128",
                          "--fps", "30", "--seed", "4", "--video_save_folder", str(tmp_path), "--video_save_name",
                          "robot"])
    assert rc == 0
    info = probe_mp4((tmp_path / "robot.mp4").read_bytes())
    assert (info["frames"], info["height"], info["width"], info["fps"], info["codec"]) == (121, 128, 128, 30.0, "h264")
    assert (tmp_path / "robot.txt").read_text(encoding="utf-8") == PROMPT


def test_client_batch_writes_each_item_and_goes_on_after_a_bad_one(server, tmp_path):
    jsonl = tmp_path / "batch.jsonl"
    jsonl.write_text(json.dumps({"prompt": "first robot"}) + "\n" + json.dumps({"text": "no prompt"}) + "\n"
                     + json.dumps({"prompt": "third robot, ünïcödé"}) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    rc = client_cli.main(["--url", server.grpc_url, "--batch_input_path", str(jsonl), "--video_save_folder", str(out),
                          "--disable_prompt_upsampler"])
    assert rc == 1  # the bad line is reported, the others are generated
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "0.mp4", "0.txt", "2.mp4", "2.txt"]
    assert (out / "2.txt").read_text(encoding="utf-8") == "third robot, ünïcödé"
    for i in (0, 2):
        info = probe_mp4((out / f"{i}.mp4").read_bytes())
        assert (info["frames"], info["height"], info["width"], info["fps"]) == (121, 96, 160, 24.0)
    before = (out / "0.mp4").stat().st_mtime_ns
    assert client_cli.main(["--url", server.grpc_url, "--batch_input_path", str(jsonl), "--video_save_folder",
                            str(out), "--disable_prompt_upsampler"]) == 1
    assert (out / "0.mp4").stat().st_mtime_ns == before  # finished items are skipped on rerun


def test_a_blocked_prompt_ends_the_request_naming_the_guardrail(server):
    with pytest.raises(InferenceServerException) as err:
        generate(server, prompt="A bloodbath in a warehouse full of boxes.")
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "GUARDRAIL BLOCKED: Blocklist: Prompt blocked by censorship" in err.value.message()
    assert generate(server, prompt=PROMPT, disable_prompt_upsampler=True)[1] == PROMPT  # and it goes on serving


def test_client_reports_a_blocked_item_writes_nothing_for_it_and_goes_on(server, tmp_path):
    jsonl = tmp_path / "batch.jsonl"
    jsonl.write_text(json.dumps({"prompt": "a knife fight with gore"}) + "\n" + json.dumps({"prompt": PROMPT}) + "\n")
    out = tmp_path / "out"
    rc = client_cli.main(["--url", server.grpc_url, "--batch_input_path", str(jsonl), "--video_save_folder", str(out)])
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "1.mp4", "1.txt"]


# ----------------------------------------------------------------------------------------------------------
# Video2World


def _v2w_inputs():
    from tests.test_video2world import gradient_image, png_bytes, video_bytes

    return png_bytes(gradient_image()), video_bytes()


def test_video2world_served_equals_in_process(server, v2w_pipeline):
    image, video = _v2w_inputs()
    for data, n, upsample in ((image, 1, True), (video, 9, False)):
        generation = v2w_pipeline(prompt=PROMPT, visual_input=data, num_input_frames=n, seed=7,
                                  disable_prompt_upsampler=not upsample)
        (mp4,), (used,) = infer(server, "video2world", ["video", "prompt_used"], prompt=PROMPT,
                                visual_input=np.array([data], dtype=np.object_), num_input_frames=n, seed=7,
                                disable_prompt_upsampler=not upsample)
        # with the upsampler on, the user's prompt is ignored and Pixtral's passed the guardrail
        assert used.decode() == (generation.prompt_used if upsample else PROMPT)
        assert (used.decode() != PROMPT) == upsample
        assert mp4 == generation.video == encode_mp4(generation.frames, 24)


@pytest.mark.parametrize("field,value,needle", [
    ("visual_input", b"definitely not an image", "'visual_input'"),
    ("num_input_frames", 5, "accepted: [1, 9]"),
])
def test_video2world_bad_inputs_get_invalid_arg(server, field, value, needle):
    image, _ = _v2w_inputs()
    inputs = {"prompt": PROMPT, "visual_input": np.array([image], dtype=np.object_), field: value}
    if field == "visual_input":
        inputs[field] = np.array([value], dtype=np.object_)
    with pytest.raises(InferenceServerException) as err:
        infer(server, "video2world", ["video"], **inputs)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert needle in err.value.message()


def test_video2world_too_few_frames_is_refused(server):
    from tests.test_video2world import video_bytes

    with pytest.raises(InferenceServerException) as err:
        infer(server, "video2world", ["video"], prompt=PROMPT, num_input_frames=9,
              visual_input=np.array([video_bytes(num_frames=4)], dtype=np.object_))
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'visual_input'" in err.value.message() and "9" in err.value.message()


def test_video2world_client_with_an_image_and_with_a_video(server, tmp_path):
    from cosmos_triton.client import video2world as v2w_cli

    image, video = _v2w_inputs()
    (tmp_path / "in.png").write_bytes(image)
    (tmp_path / "in.mp4").write_bytes(video)
    rc = v2w_cli.main(["--url", server.grpc_url, "--input_image_or_video_path", str(tmp_path / "in.png"),
                       "--prompt", PROMPT, "--video_save_folder", str(tmp_path / "single"), "--video_save_name", "a"])
    assert rc == 0
    info = probe_mp4((tmp_path / "single" / "a.mp4").read_bytes())
    assert (info["frames"], info["height"], info["width"], info["fps"]) == (121, 96, 160, 24.0)
    jsonl = tmp_path / "batch.jsonl"
    jsonl.write_text(json.dumps({"visual_input": str(tmp_path / "in.mp4"), "prompt": PROMPT}) + "\n"
                     + json.dumps({"visual_input": str(tmp_path / "missing.png"), "prompt": PROMPT}) + "\n")
    rc = v2w_cli.main(["--url", server.grpc_url, "--batch_input_path", str(jsonl), "--num_input_frames", "9",
                       "--video_save_folder", str(tmp_path / "batch")])
    assert rc == 1  # the missing file is reported, the video item is generated
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == [MANIFEST, "0.mp4", "0.txt"]
