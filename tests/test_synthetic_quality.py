"""Quality of the trained small model, judged on what it generates: the oracle (cosmos_triton.synthetic).

These run only when the trained components are installed in checkpoints/builtin/ (then checkpoints/small serves
them); COSMOS_QUALITY_ANY_WEIGHTS=1 runs them against whatever checkpoints/small holds, e.g. the random weights,
which must fail every test here. Prompts go in as written (upsampler disabled), with the served defaults otherwise:
guidance 7, the default negative prompt, 35 steps, 96x160, 121 frames, fps 24.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cosmos_triton.synthetic.metrics import adherence, centroid_track, psnr
from cosmos_triton.synthetic.oracle import Case, oracle_cases, select, summarise
from cosmos_triton.synthetic.render import render_clip
from cosmos_triton.synthetic.scenes import oracle_scene
from export.make_small_checkpoints import BUILTIN_FILES, trained_components

TRAINED = set(trained_components()) == set(BUILTIN_FILES)
ANY_WEIGHTS = os.environ.get("COSMOS_QUALITY_ANY_WEIGHTS") == "1"
pytestmark = pytest.mark.skipif(
    not (TRAINED or ANY_WEIGHTS),
    reason="the trained small models are not in checkpoints/builtin/ (python -m export.train_small_models on a GPU, "
           "then python -m export.install_builtin); COSMOS_QUALITY_ANY_WEIGHTS=1 runs these on any weights")

NUM_STEPS = 35  # the served default: the oracle judges what users get
# thresholds: what the trained model must reach; random weights score 0 on all of them
COLOUR_ACCURACY_MIN = 0.75
DIRECTION_ACCURACY_MIN = 0.6
HELD_OUT_COLOUR_ACCURACY_MIN = 0.5
GUIDANCE_SCORE_GAIN_MIN = 0.1
V2W_KEPT_FRAMES_PSNR_MIN = 22.0
V2W_TRAVEL_MIN = 0.2  # of the frame extent, beyond the last input frame
# The installed model (Run 7, benchmarks/results/small_model_training.md) has learnt colour (30/30 of the oracle
# cases on the GPU, 8/8 here) and direction: 27/30 there, 7/8 here. Guidance raises direction accuracy on the GPU
# (0.90 guided vs 0.75 unguided on the 20 seen cases) but not yet this test's continuous score on its four cases
# (+0.04, 0.1 asked: two of the four travel further unguided): that test is a strict expected failure, so a model
# that passes it turns it red until GUIDANCE_GAIN_SHOWN is updated. DIRECTION_LEARNT does the same for the
# direction tests (True since Run 7; Run 5 scored 4/8 here).
DIRECTION_LEARNT = True
GUIDANCE_GAIN_SHOWN = False
direction_pending = pytest.mark.xfail(
    not DIRECTION_LEARNT and TRAINED and not ANY_WEIGHTS, strict=True,
    reason="the built-in small model does not follow the named direction reliably yet")
guidance_pending = pytest.mark.xfail(
    not GUIDANCE_GAIN_SHOWN and TRAINED and not ANY_WEIGHTS, strict=True,
    reason="guidance does not yet raise this test's adherence score by 0.1 (+0.04 with Run 7)")


def _seen_subset() -> list[Case]:
    """8 seen cases: every colour, every direction twice."""
    seen = select(oracle_cases(), "seen")
    return [seen[i] for i in (0, 5, 10, 15, 17, 22 % 20, 3, 9)]


def adherence_score(frames: np.ndarray, case: Case) -> float:
    """Continuous adherence: fraction of frames with the colour present + signed travel along the named direction
    (fraction of the frame extent, clipped to [-1, 1])."""
    a = adherence(frames, case.colour, case.direction)
    h, w = frames.shape[1:3]
    travel = {"left": -a.dx / w, "right": a.dx / w, "up": -a.dy / h, "down": a.dy / h}[case.direction]
    return a.presence + float(np.clip(travel, -1, 1))


@pytest.fixture(scope="module")
def t2w(small_settings):
    from cosmos_triton.synthetic.generation import load_text2world

    return load_text2world(small_settings)


@pytest.fixture(scope="module")
def seen_videos(t2w) -> list[tuple[Case, np.ndarray]]:
    return [(case, t2w(case.prompt, case.seed, num_steps=NUM_STEPS)) for case in _seen_subset()]


@pytest.fixture(scope="module")
def seen_summary(seen_videos) -> dict:
    rows = [(case, adherence(frames, case.colour, case.direction)) for case, frames in seen_videos]
    summary = summarise(rows)["all"]
    print(json.dumps({"text2world_seen": summary, "cases": [[c.prompt, a.presence, a.measured_direction]
                                                            for c, a in rows]}))
    return summary


def test_text2world_shows_the_named_colour(seen_summary):
    assert seen_summary["colour_accuracy"] >= COLOUR_ACCURACY_MIN, seen_summary


@direction_pending
def test_text2world_moves_the_named_way(seen_summary):
    assert seen_summary["direction_accuracy"] >= DIRECTION_ACCURACY_MIN, seen_summary


@pytest.fixture(scope="module")
def guidance_scores(t2w, seen_videos) -> tuple[list[float], list[float]]:
    chosen = seen_videos[:4]
    guided = [adherence_score(frames, case) for case, frames in chosen]
    unguided = [adherence_score(t2w(case.prompt, case.seed, num_steps=NUM_STEPS, guidance=0.0), case)
                for case, _ in chosen]
    print(json.dumps({"guided": guided, "unguided": unguided}))
    return guided, unguided


@guidance_pending  # the score's gain comes from travel the named way; presence is ~1 with and without
def test_guidance_measurably_improves_adherence(guidance_scores):
    guided, unguided = guidance_scores
    assert np.mean(guided) - np.mean(unguided) >= GUIDANCE_SCORE_GAIN_MIN, (guided, unguided)


@direction_pending
def test_guided_videos_adhere(guidance_scores):
    guided, _ = guidance_scores
    assert np.mean(guided) >= 1.0, guided  # present in every frame and moving the right way, on average


def test_held_out_colour_motion_pairs_and_phrasings(t2w):
    cases = select(oracle_cases(), "held_out_pair") + select(oracle_cases(), "held_out_phrasing", limit=2)
    rows = [(c, adherence(t2w(c.prompt, c.seed, num_steps=NUM_STEPS), c.colour, c.direction)) for c in cases]
    summary = summarise(rows)
    print(json.dumps(summary))
    assert summary["all"]["colour_accuracy"] >= HELD_OUT_COLOUR_ACCURACY_MIN, summary


@pytest.fixture(scope="module")
def v2w(small_settings):
    from cosmos_triton.synthetic.generation import load_video2world

    return load_video2world(small_settings)


@pytest.mark.parametrize("index", [0, 1])
def test_video2world_keeps_the_input_frames_and_continues_their_motion(v2w, index):
    from cosmos_triton.media.mp4 import decode_mp4, encode_mp4

    case = [c for c in select(oracle_cases(), "seen") if c.direction in ("right", "up")][index * 3]
    truth = render_clip(oracle_scene(case.colour, case.shape, case.direction, case.seed), 96, 160).numpy()
    given = decode_mp4(encode_mp4(truth[:9], 24))[0]  # what the pipeline sees after the mp4 round trip
    out = v2w(case.prompt, case.seed, truth[:9], num_steps=NUM_STEPS)
    kept = psnr(out[:9], given)
    a = adherence(out, case.colour, case.direction)
    t, xs, ys = centroid_track(out, case.colour)
    print(json.dumps({"prompt": case.prompt, "kept_psnr_db": kept, **a.to_dict()}))
    assert kept >= V2W_KEPT_FRAMES_PSNR_MIN
    assert a.colour_ok and a.direction_ok, a
    # beyond the given frames: from the last input frames to the end it keeps going the same way
    axis, sign, extent = {"right": (xs, 1, 160), "up": (ys, -1, 96)}[case.direction]
    late, early = axis[t >= 100], axis[(t >= 4) & (t <= 8)]
    assert len(late) and len(early) and sign * (late.mean() - early.mean()) >= V2W_TRAVEL_MIN * extent


@pytest.mark.slow
def test_served_text2world_follows_the_caption(server, tmp_path):
    """Through the server with the project's client, as a user runs it (prompt as written, served defaults)."""
    from cosmos_triton.client import text2world as client
    from cosmos_triton.media.mp4 import decode_mp4

    case = select(oracle_cases(), "seen")[7]
    rc = client.main(["--url", server.grpc_url, "--prompt", case.prompt, "--seed", str(case.seed),
                      "--disable_prompt_upsampler", "--video_save_folder", str(tmp_path), "--video_save_name", "case"])
    assert rc == 0
    assert (tmp_path / "case.txt").read_text().strip() == case.prompt
    frames = decode_mp4((tmp_path / "case.mp4").read_bytes())[0]
    a = adherence(frames, case.colour, case.direction)
    print(json.dumps({"served": case.prompt, **a.to_dict()}))
    assert a.colour_ok, a
    if DIRECTION_LEARNT or ANY_WEIGHTS:
        assert a.direction_ok, a
