"""Video content safety filter (docs/FORMATS.md, Video content safety) and the small SigLIP + classifier writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cosmos_triton.guardrail import video_safety as video_safety_module
from cosmos_triton.guardrail.common import SIGLIP_REPO
from cosmos_triton.guardrail.video_safety import (
    CHECKPOINT_FILE,
    CLASS_NAMES,
    VideoContentSafetyFilter,
    VideoSafetyModel,
    classify_features,
    load_classifier,
)
from export.small_video_safety import FEATURE_DIM, write_small_video_safety

# feature direction j -> class; class 0 also gets a bias of 0.5, which wins over unnormalised features shorter than 0.5
CLASS_OF_DIRECTION = {0: 0, 1: 2, 2: 5, 3: 6}
MARKER = 200  # the pixel value that the stub encoder reads as "this frame is Violence"


def known_classifier(input_size: int = 4, mapping: dict[int, int] = CLASS_OF_DIRECTION) -> VideoSafetyModel:
    """A classifier whose answer for a non-negative unit vector e_j is mapping[j]: the hidden layers pass the first
    dimensions through (identity Linear, neutral BatchNorm, ReLU) and the last layer routes dimension j to its class."""
    model = VideoSafetyModel(input_size)
    layers = model.network.layers
    with torch.no_grad():
        for linear in (layers[0], layers[3], layers[6]):
            linear.weight.zero_()
            linear.bias.zero_()
        for j in range(input_size):
            layers[0].weight[j, j] = layers[3].weight[j, j] = 1.0
        layers[6].bias[0] = 0.5
        for j, cls in mapping.items():
            layers[6].weight[cls, j] += 1.0
    return model.eval()


def one_hot(rows: list[int], size: int = 4) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(rows), size).float()


@pytest.fixture(scope="module")
def safety_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_video_safety(tmp_path_factory.mktemp("guardrail") / "video_content_safety_filter", seed=0)


@pytest.fixture(scope="module")
def safety(safety_dir: Path) -> VideoContentSafetyFilter:
    return VideoContentSafetyFilter(safety_dir, "cpu")


def video(frames: int = 121, marked: tuple[int, ...] = ()) -> np.ndarray:
    """A smooth synthetic clip of 96x160 frames; `marked` frames are filled with MARKER."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(96), np.arange(160), indexing="ij")
    clip = np.stack([(x + 2 * t) % 160, (y * 2 + t) % 192, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    clip[list(marked)] = MARKER
    return clip


def stub_encoder(safety: VideoContentSafetyFilter, monkeypatch: pytest.MonkeyPatch, fail: tuple[int, ...] = ()):
    """Features from pixels: MARKER frames -> direction 1 (Violence), others -> direction 0 (Safe); a frame whose
    first pixel is in `fail` raises. Returns the list of frames seen, to count how far the check went."""
    seen: list[int] = []

    def encode(frames):
        values = [int(frame[0, 0, 2]) for frame in frames]
        seen.extend(values)
        if any(v in fail for v in values):
            raise RuntimeError("bad frame")
        return one_hot([1 if v == MARKER else 0 for v in values])

    monkeypatch.setattr(safety, "encode", encode)
    monkeypatch.setattr(safety, "classifier", known_classifier())
    return seen


def test_classify_features_on_a_classifier_with_known_answers() -> None:
    assert classify_features(one_hot([0, 1, 2, 3, 1]), known_classifier()) == [0, 2, 5, 6, 2]


def test_features_are_l2_normalised_before_the_classifier() -> None:
    features = one_hot([0, 1, 2, 3])
    want = classify_features(features, known_classifier())
    for scale in (0.1, 1e-3, 7.0, 1e4):
        assert classify_features(scale * features, known_classifier()) == want
    # without the normalisation a 0.1-long vector would lose to the 0.5 bias of class 0
    assert known_classifier()(0.1 * features).argmax(-1).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("key", ["network.layers.0.weight", "network.layers.4.running_var"])
def test_small_checkpoint_loads_strictly(safety_dir: Path, tmp_path: Path, key: str) -> None:
    model = load_classifier(safety_dir / CHECKPOINT_FILE)
    assert model.network.layers[0].in_features == FEATURE_DIM and not model.training
    state = torch.load(safety_dir / CHECKPOINT_FILE, weights_only=True)["model"]
    linear, norm = ("weight", "bias"), ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    want = {f"network.layers.{i}.{k}" for i in (0, 3, 6) for k in linear}
    assert set(state) == want | {f"network.layers.{i}.{k}" for i in (1, 4) for k in norm}
    state["renamed." + key] = state.pop(key)
    torch.save({"model": state}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(RuntimeError, match=f'Missing key.*"{key}"'):
        load_classifier(tmp_path / CHECKPOINT_FILE)


def test_small_filter_passes_a_synthetic_video(safety: VideoContentSafetyFilter) -> None:
    result = safety.check(video(16))
    assert result.safe and result.guardrail == "VideoContentSafetyFilter"
    safety.batch_size = 16
    try:
        assert safety.check(video(121)).safe
    finally:
        safety.batch_size = 1


def test_batched_frames_match_one_at_a_time(safety: VideoContentSafetyFilter) -> None:
    frames = video(12)
    single = torch.cat([safety.encode(frames[i : i + 1]) for i in range(len(frames))])
    batched = safety.encode(frames)
    assert batched.shape == (12, FEATURE_DIM)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    classifier = known_classifier(FEATURE_DIM, {j: 1 + j % 6 for j in range(FEATURE_DIM)})
    assert classify_features(batched, classifier) == classify_features(single, classifier)


def test_unsafe_class_blocks_and_is_named(safety, safety_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classifier = load_classifier(safety_dir / CHECKPOINT_FILE)
    with torch.no_grad():
        classifier.network.layers[6].bias[5] = 100.0  # Hate_and_Harassment beats the checkpoint's Safe bias
    monkeypatch.setattr(safety, "classifier", classifier)
    result = safety.check(video(4))
    assert not result.safe and result.message == "frame 0 classified as Hate_and_Harassment"


@pytest.mark.parametrize("batch_size", [1, 16])
def test_every_frame_is_checked(safety, monkeypatch: pytest.MonkeyPatch, batch_size: int) -> None:
    seen = stub_encoder(safety, monkeypatch)
    monkeypatch.setattr(safety, "batch_size", batch_size)
    assert safety.check(video(121)).safe and len(seen) == 121
    result = safety.check(video(121, marked=(120,)))
    assert not result.safe and result.message == f"frame 120 classified as {CLASS_NAMES[2]}"


def test_the_check_stops_at_the_first_unsafe_frame(safety, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = stub_encoder(safety, monkeypatch)
    assert safety.check(video(121, marked=(5, 9))).message == "frame 5 classified as Violence"
    assert len(seen) == 6


@pytest.mark.parametrize("batch_size", [1, 4])
def test_a_frame_the_classifier_fails_on_is_logged_and_blocks(safety, monkeypatch, caplog, batch_size: int) -> None:
    frames = video(10, marked=(7,))
    frames[3] = 17  # the stub fails on this frame
    stub_encoder(safety, monkeypatch, fail=(17,))
    monkeypatch.setattr(safety, "batch_size", batch_size)
    with caplog.at_level("WARNING", logger=video_safety_module.__name__):
        result = safety.check(frames)
    assert result.message == "frame 7 classified as Violence" and "frame 3" in caplog.text  # unsafe still wins
    frames[7] = 17
    result = safety.check(frames)  # every other frame is Safe: the unchecked ones block (the original skips them)
    assert not result.safe and result.message == "frame 3 could not be classified"


def test_missing_snapshot_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=SIGLIP_REPO):
        VideoContentSafetyFilter(tmp_path)


def test_writer_is_byte_identical_on_rerun(safety_dir: Path, tmp_path: Path) -> None:
    again = write_small_video_safety(tmp_path / "vcsf", seed=0)
    files = sorted(p.relative_to(safety_dir) for p in safety_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((safety_dir / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert {f.name for f in files} == {
        "main",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        CHECKPOINT_FILE,
    }
