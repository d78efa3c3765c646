"""The small-model training script end to end in its --tiny configuration (CPU, a few steps of every phase), and
its outputs through the real loaders: install into checkpoints/builtin layout, load with load_dit /
CosmosVideoTokenizer, generate with the in-process pipelines."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cosmos_triton.models.checkpoints import TOKENIZER_DIR, read_dit_checkpoint
from cosmos_triton.models.dit import CosmosDiT, build_model
from cosmos_triton.request.envelope import SMALL_ENVELOPE, SMALL_V2W_ENVELOPE
from cosmos_triton.synthetic import DATA_VERSION
from export import make_small_checkpoints as msc
from export import train_small_models
from export.install_builtin import install
from export.small_dit import SMALL_DIT_DIR, SMALL_V2W_DIT_DIR
from export.train_dit import build_trainable, to_original_state_dict, video2world_from_text2world
from export.train_small_models import EXPECTED_T5_FINGERPRINT, TARS, TINY, TRAINING_JSON, main

ARCH = TINY.t2w_arch


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_run")
    saved = train_small_models.START
    # as late in a long test session: the budget of a run called in-process counts from the call, not the import
    train_small_models.START = saved - 3600.0
    try:
        assert main(["--tiny", "--out", str(out), "--seed", "3"]) == 0
    finally:
        train_small_models.START = saved
    return out


@pytest.fixture(scope="module")
def installed(tiny_run, tmp_path_factory) -> Path:
    builtin = tmp_path_factory.mktemp("builtin")
    install(tiny_run, builtin, log_copy=None)
    return builtin


def test_tiny_run_writes_every_output_and_its_record(tiny_run):
    assert {p.name for p in tiny_run.iterdir()} == {*TARS.values(), "train_log.json", "samples.npz"}
    members = {}
    for name in TARS.values():
        with tarfile.open(tiny_run / name) as tar:
            members[name] = sorted(tar.getnames())
    assert members["tokenizer.tar"] == sorted([f"{TOKENIZER_DIR}/{f}" for f in msc.BUILTIN_FILES[TOKENIZER_DIR]]
                                              + [TRAINING_JSON])
    assert members["t2w.tar"] == sorted([f"{SMALL_DIT_DIR}/model.pt", f"{SMALL_DIT_DIR}/config.json", TRAINING_JSON])
    assert members["v2w.tar"] == sorted([f"{SMALL_V2W_DIT_DIR}/model.pt", f"{SMALL_V2W_DIT_DIR}/config.json",
                                         TRAINING_JSON])
    log = json.loads((tiny_run / "train_log.json").read_text())
    assert log["finished"] and log["seed"] == 3 and log["data_version"] == DATA_VERSION
    assert log["t5"]["match"] and "--tiny" in log["command"]
    assert log["held_out"]["colour_motion_pairs"] and log["held_out"]["phrasing_templates"]
    for phase, steps in (("tokenizer", 2), ("text2world", 3), ("video2world", 2)):
        assert log["phases"][phase]["steps"] == steps
        curve = log["phases"][phase]["curve"]
        assert curve and all(np.isfinite(v) for p in curve for k, v in p.items() if k != "step")
    assert set(log["evaluation"]) >= {"text2world", "text2world_guidance_0", "tokenizer_round_trip", "video2world"}
    assert set(log["outputs"]) == {f"{f}/{n}" for f, names in msc.BUILTIN_FILES.items() for n in names}
    samples = np.load(tiny_run / "samples.npz")
    assert samples.files and all(samples[k].dtype == np.uint8 for k in samples.files)


def test_installed_files_load_through_the_real_loaders_and_generate(installed, small_settings):
    """load_dit, CosmosVideoTokenizer and the T5 of serving, then one guided sampling step at the served default
    resolution with each DiT, through the sampler, guidance and Video2World conditioning of cosmos_triton."""
    from cosmos_triton.models.dit import load_dit
    from cosmos_triton.models.text_encoder import T5TextEncoder
    from cosmos_triton.models.tokenizer import CosmosVideoTokenizer
    from cosmos_triton.synthetic.render import render_clip
    from cosmos_triton.synthetic.scenes import oracle_scene
    from export.evaluate_small_models import generate_batch
    from export.training_data import embed_captions, full_context

    assert set(msc.trained_components(installed)) == set(msc.BUILTIN_FILES)
    assert json.loads((installed / TRAINING_JSON).read_text())["seed"] == 3
    t2w, v2w = read_dit_checkpoint(installed / SMALL_DIT_DIR), read_dit_checkpoint(installed / SMALL_V2W_DIT_DIR)
    assert t2w.architecture == ARCH and t2w.envelope == SMALL_ENVELOPE
    assert v2w.architecture == replace(ARCH, model_type="Video2World") and v2w.envelope == SMALL_V2W_ENVELOPE
    tokenizer = CosmosVideoTokenizer(installed / TOKENIZER_DIR)
    assert tokenizer.encode(torch.zeros(1, 3, 121, 96, 160, dtype=torch.bfloat16)).shape == (1, 16, 16, 12, 20)
    cond = full_context(embed_captions(T5TextEncoder(small_settings.t5_path), ["A red circle moving left."]))
    (frames,) = generate_batch(load_dit(t2w), tokenizer, cond, torch.zeros_like(cond), [1], num_steps=1,
                               guidance=7.0)
    assert frames.shape == (121, 96, 160, 3) and frames.dtype == np.uint8
    from cosmos_triton.media.visual_input import num_condition_latent_frames, prepare_condition_video
    from export import evaluate_small_models as ev

    frames_in = render_clip(oracle_scene("blue", "square", "up"), 96, 160).numpy()[:9]
    clip = prepare_condition_video(frames_in, 96, 160)
    assert torch.equal(ev.condition_clip(frames_in), clip)  # the training host's copy, without imageio
    assert ev.num_condition_latent_frames(9) == num_condition_latent_frames(9)
    (frames,) = generate_batch(load_dit(v2w), tokenizer, cond, cond, [1], num_steps=1, guidance=7.0,
                               condition_clips=clip, num_input_frames=9)
    assert frames.shape == (121, 96, 160, 3)


def test_original_key_layout_round_trip():
    model = build_trainable(ARCH, 0, torch.device("cpu"))
    with torch.no_grad():
        for p in model.parameters():  # nothing left at zero, so every key's placement matters
            p.add_(0.05 * torch.randn_like(p))
    state = {k: v.detach() for k, v in model.named_parameters()}
    original = to_original_state_dict(state, ARCH)
    assert all(k.startswith(("net.", "logvar.")) for k in original)
    assert all(v.dtype == torch.bfloat16 for v in original.values())
    loaded = CosmosDiT(build_model(ARCH, original), ARCH)  # the serving loader, strict
    trained = CosmosDiT(torch.nn.Module.to(model, torch.bfloat16).eval(), ARCH)
    x = torch.randn(1, 16, 2, 4, 6, dtype=torch.bfloat16)
    ctx = torch.randn(1, 512, 1024, dtype=torch.bfloat16)
    c = torch.tensor([0.3], dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(loaded(x, c, ctx, 24.0), trained(x, c, ctx, 24.0))


def test_video2world_starts_as_text2world_with_the_mask_ignored():
    t2w = build_trainable(ARCH, 0, torch.device("cpu"))
    with torch.no_grad():
        for p in t2w.parameters():
            p.add_(0.05 * torch.randn_like(p))
    v2w_arch = replace(ARCH, model_type="Video2World")
    v2w = build_trainable(v2w_arch, 1, torch.device("cpu"))
    video2world_from_text2world({k: v.detach() for k, v in t2w.named_parameters()}, v2w)
    x, ctx, c = torch.randn(1, 16, 2, 4, 6), torch.randn(1, 512, 1024), torch.tensor([0.3])
    mask = torch.ones(1, 1, 2, 4, 6)
    with torch.no_grad():
        want = CosmosDiT(t2w.eval(), ARCH)(x, c, ctx, 24.0)
        got = CosmosDiT(v2w.eval(), v2w_arch)(x, c, ctx, 24.0, mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_make_small_checkpoints_copies_the_trained_components(installed, tmp_path, monkeypatch):
    written = []
    for name in ("write_small_t5", "write_small_text2world_upsampler", "write_small_video2world_upsampler",
                 "write_small_blocklist", "write_small_aegis", "write_small_face_blur", "write_small_video_safety",
                 "write_small_tokenizer"):
        monkeypatch.setattr(msc, name, lambda path, *_a, _n=name, **_k: written.append(_n) or path.mkdir(parents=True))
    out = msc.make_small_checkpoints(tmp_path / "small", builtin=installed)
    for folder, files in msc.BUILTIN_FILES.items():
        for f in files:
            assert (out / folder / f).read_bytes() == (installed / folder / f).read_bytes()
    assert "write_small_tokenizer" not in written and "write_small_t5" in written
    stamp = (out / msc.STAMP).read_text()
    assert all(digest in stamp for digest in msc.trained_components(installed).values())
    written.clear()
    assert msc.make_small_checkpoints(tmp_path / "small", builtin=installed) == out and not written  # up to date
    msc.make_small_checkpoints(tmp_path / "small", builtin=installed, random=True)
    assert "write_small_tokenizer" in written
    assert (out / SMALL_DIT_DIR / "model.pt").read_bytes() != (installed / SMALL_DIT_DIR / "model.pt").read_bytes()
    (installed / SMALL_DIT_DIR / "config.json").rename(tmp_path / "config.json")
    try:
        with pytest.raises(FileNotFoundError, match="incomplete"):
            msc.make_small_checkpoints(tmp_path / "small", builtin=installed)
    finally:
        (tmp_path / "config.json").rename(installed / SMALL_DIT_DIR / "config.json")


def test_installer_accepts_only_the_expected_members(tmp_path):
    with tarfile.open(tmp_path / "t2w.tar", "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ValueError, match="unexpected member"):
        install(tmp_path, tmp_path / "builtin", log_copy=None)
    assert not (tmp_path / "outside.txt").exists()


def test_expected_t5_fingerprint_is_the_served_t5(small_settings):
    from cosmos_triton.models.text_encoder import T5TextEncoder
    from export.training_data import embed_captions, t5_fingerprint

    t5 = T5TextEncoder(small_settings.t5_path)
    assert t5_fingerprint(t5) == EXPECTED_T5_FINGERPRINT
    prompts = ["A red circle moving left.", "The blue box slides from top to bottom on a checkerboard."]
    batched = embed_captions(t5, prompts)
    for i, p in enumerate(prompts):  # batched embedding = the served one-prompt-at-a-time encoding, cast to bf16
        single = t5.encode_one(p).to(torch.bfloat16)
        assert torch.count_nonzero(single[0, batched.shape[1]:]) == 0
        torch.testing.assert_close(batched[i], single[0, : batched.shape[1]], rtol=0.01, atol=0.01)


def _member(tar_path: Path, suffix: str) -> bytes:
    with tarfile.open(tar_path) as tar:
        name = next(n for n in tar.getnames() if n.endswith(suffix))
        return tar.extractfile(name).read()


@pytest.mark.parametrize("source", ["results", "installed"])
def test_resume_starts_from_the_earlier_run_and_keeps_its_tokenizer(tiny_run, installed, tmp_path, source):
    """A continuation with no steps exports exactly the weights it started from (the bf16 model.pt round trip is
    exact; the unused logvar head is carried over, not redrawn from this run's seed), keeps the tokenizer files
    byte for byte and records the run it continued; from the run's OUT folder
    or from an installed checkpoints/builtin."""
    import time

    out = tmp_path / "resumed"
    cfg = replace(train_small_models.continued(TINY), max_steps=(0, 0, 0))
    resume = tiny_run if source == "results" else installed
    run = train_small_models.Run(out, 600.0, ["--resume", str(resume)], time.monotonic())
    train_small_models.train(cfg, run, 5, torch.device("cpu"), train_small_models.DEFAULT_T5_DIR, False,
                             evaluate_at_end=False, resume=resume)
    for name in ("encoder.jit", "decoder.jit", "mean_std.pt"):
        assert _member(out / "tokenizer.tar", name) == _member(tiny_run / "tokenizer.tar", name)
    for tar in ("t2w.tar", "v2w.tar"):
        before, after = (torch.load(io.BytesIO(_member(d / tar, "model.pt")), weights_only=True)
                         for d in (tiny_run, out))
        assert before.keys() == after.keys()
        # logvar.* (a head the sampler never uses) too: drawn from the first run's seed and kept since
        assert all(torch.equal(before[k], after[k]) for k in before)
    log = json.loads((out / "train_log.json").read_text())
    assert log["phases"]["tokenizer"]["steps"] == 0 and log["phases"]["text2world"]["steps"] == 0
    assert log["resumed_from"]["seed"] == 3 and log["resumed_from"]["phases"]["text2world"]["steps"] == 3
    assert cfg.t2w.lr == pytest.approx(TINY.t2w.lr * 2 / 3)


def test_continuation_recipes_need_an_earlier_run(tmp_path):
    with pytest.raises(SystemExit):
        main(["--config", "layout", "--out", str(tmp_path)])
    run = train_small_models.Run(tmp_path / "out", 60.0, [], 0.0)
    with pytest.raises(FileNotFoundError, match="neither a training run"):
        train_small_models.take_earlier_run(tmp_path, run.builtin)


def test_train_builtin_script_replays_the_installed_chain(tmp_path):
    """export/train_builtin.sh runs the installed model's runs in order, each continuing the one before, with the
    seeds, budgets and recipes its record (checkpoints/builtin/TRAINING.json) names."""
    import os
    import shlex
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    printed = subprocess.run(["bash", str(repo / "export/train_builtin.sh"), str(tmp_path)], check=True,
                             capture_output=True, text=True, env={**os.environ, "PY": "echo"}).stdout
    commands = [shlex.split(line) for line in printed.splitlines()]
    record = json.loads((repo / "checkpoints/builtin/TRAINING.json").read_text())
    recorded = []
    while record:
        recorded.append(shlex.split(record["command"]))
        record = record.get("resumed_from")
    recorded.reverse()
    assert len(commands) == len(recorded) == 6

    def option(args: list[str], name: str) -> str | None:
        return args[args.index(name) + 1] if name in args else None

    for i, (ours, theirs) in enumerate(zip(commands, recorded, strict=True)):
        for name in ("--seed", "--minutes", "--config"):
            assert option(ours, name) == option(theirs, name), (i, name)
        assert option(ours, "--resume") == (str(tmp_path / f"r{i + 1}") if i else None)
        assert option(ours, "--out") == str(tmp_path / f"r{i + 2}")
