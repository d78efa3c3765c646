"""Request validation against a checkpoint's envelope: defaults, accepted values, errors naming the field."""

import pytest

from cosmos_triton.errors import RequestError
from cosmos_triton.models.checkpoints import DIT_PRESETS, latent_shape, read_dit_checkpoint, write_dit_config
from cosmos_triton.request.envelope import (
    DEFAULT_NEGATIVE_PROMPT,
    ORIGINAL_ENVELOPE,
    SMALL_ENVELOPE,
    Envelope,
    validate_request,
)


def test_defaults_are_the_original_cli_defaults():
    req = validate_request(ORIGINAL_ENVELOPE, {"prompt": "a robot"})
    assert req == {"prompt": "a robot", "negative_prompt": DEFAULT_NEGATIVE_PROMPT, "seed": 1, "num_steps": 35,
                   "guidance": 7.0, "fps": 24, "num_video_frames": 121, "height": 704, "width": 1280,
                   "disable_prompt_upsampler": False, "word_limit_to_skip_upsampler": 250,
                   "cache_threshold": 0.0}  # ours: the step cache, off unless asked
    assert DEFAULT_NEGATIVE_PROMPT.startswith("The video captures a series of frames showing ugly scenes")
    assert DEFAULT_NEGATIVE_PROMPT.endswith("Overall, the video is of poor quality.")


def test_the_original_accepts_its_five_resolutions_121_frames_and_fps_12_to_40():
    for h, w in [(704, 1280), (1280, 704), (960, 960), (704, 960), (960, 704)]:
        validate_request(ORIGINAL_ENVELOPE, {"prompt": "p", "height": h, "width": w})
    for fps in (12, 24, 40):
        validate_request(ORIGINAL_ENVELOPE, {"prompt": "p", "fps": fps})


@pytest.mark.parametrize("field,value,accepted", [
    ("fps", 41, "[12, 40]"),
    ("fps", 11, "[12, 40]"),
    ("fps", 24.5, "integers in [12, 40]"),
    ("num_video_frames", 120, "[121]"),
    ("num_steps", 0, "[1, 200]"),
    ("seed", -1, "[0, 4294967295]"),
    ("seed", 2**32, "[0, 4294967295]"),
    ("guidance", float("nan"), "[0.0, 100.0]"),
    ("guidance", -1.0, "[0.0, 100.0]"),
])
def test_out_of_envelope_values_name_the_field_and_the_accepted_values(field, value, accepted):
    with pytest.raises(RequestError) as err:
        validate_request(ORIGINAL_ENVELOPE, {"prompt": "p", field: value})
    assert err.value.field == field
    assert f"'{field}'" in str(err.value) and accepted in str(err.value)


def test_resolution_error_lists_the_accepted_pairs():
    with pytest.raises(RequestError, match=r"'height/width'.*700x1280.*704x1280, 1280x704, 960x960"):
        validate_request(ORIGINAL_ENVELOPE, {"prompt": "p", "height": 700, "width": 1280})


@pytest.mark.parametrize("prompt", ["", "   ", None])
def test_prompt_is_required(prompt):
    with pytest.raises(RequestError, match="'prompt'"):
        validate_request(ORIGINAL_ENVELOPE, {"prompt": prompt})


def test_video2world_needs_a_prompt_only_with_the_upsampler_disabled():
    from cosmos_triton.request.envelope import ORIGINAL_V2W_ENVELOPE

    assert validate_request(ORIGINAL_V2W_ENVELOPE, {})["prompt"] == ""
    with pytest.raises(RequestError, match="'prompt'"):
        validate_request(ORIGINAL_V2W_ENVELOPE, {"disable_prompt_upsampler": True})
    with pytest.raises(RequestError, match="'disable_prompt_upsampler'"):
        validate_request(ORIGINAL_V2W_ENVELOPE, {"disable_prompt_upsampler": "yes"})


def test_empty_negative_prompt_is_kept_empty():
    assert validate_request(ORIGINAL_ENVELOPE, {"prompt": "p", "negative_prompt": ""})["negative_prompt"] == ""


def test_guidance_is_rounded_like_the_fp32_wire():
    assert validate_request(ORIGINAL_ENVELOPE, {"prompt": "p", "guidance": 7.3})["guidance"] == 7.300000190734863


def test_latent_shape_is_cv8x8x8():
    assert latent_shape(121, 704, 1280) == (16, 16, 88, 160)
    assert latent_shape(121, 96, 160) == (16, 16, 12, 20)


def test_config_json_round_trip_and_presets(tmp_path):
    from export.small_dit import SMALL_T2W

    (tmp_path / "small").mkdir()
    write_dit_config(tmp_path / "small", SMALL_T2W, SMALL_ENVELOPE)
    ckpt = read_dit_checkpoint(tmp_path / "small")
    assert ckpt.architecture == SMALL_T2W and ckpt.envelope == SMALL_ENVELOPE
    assert Envelope.from_dict(SMALL_ENVELOPE.to_dict()) == SMALL_ENVELOPE
    # a real folder whose config.json does not describe the model falls back to the preset named by the folder
    real = tmp_path / "Cosmos-1.0-Diffusion-14B-Text2World"
    real.mkdir()
    (real / "config.json").write_text('{"model_size": "14b"}')
    ckpt = read_dit_checkpoint(real)
    assert ckpt.architecture == DIT_PRESETS[real.name] and ckpt.envelope == ORIGINAL_ENVELOPE
    unknown = tmp_path / "mystery"
    unknown.mkdir()
    with pytest.raises(ValueError, match="no 'architecture'"):
        read_dit_checkpoint(unknown)
