"""Train the built-in small Cosmos-1.0 models on procedural shape videos, in one command, within a wall-clock budget.

    python -m export.train_small_models --out OUT [--minutes 7.5] [--seed 0] [--device cuda] [--t5_dir DIR]
    python -m export.train_small_models --tiny --out OUT      # CPU smoke: a few steps of everything (seconds)
    python -m export.train_small_models --config probe --device cpu --minutes 45 --out OUT   # the recipe at CPU scale
    python -m export.train_small_models --config cpu --device cpu --minutes 80 --out OUT     # on CPU, at 96x160

Phases (each stops itself at its share of --minutes; weights are written as soon as they exist and refreshed while
training, so a run cut short still leaves usable files):
1. tokenizer: AutoencoderKLCosmos (CV8x8x8 design, small widths) on rendered clips; latent mean/std per (channel,
   latent frame); traced to encoder.jit / decoder.jit + mean_std.pt            -> OUT/tokenizer.tar
2. Text2World DiT (Cosmos architecture, small) with the EDM objective on latent pools encoded by that tokenizer,
   captions embedded by the small T5 (frozen), caption dropout                 -> OUT/t2w.tar
3. Video2World DiT, started from the Text2World weights, with condition frames -> OUT/v2w.tar
4. evaluation on the oracle caption set with the exported files (if time is left) -> OUT/train_log.json,
   OUT/samples.npz

Each tar holds paths relative to `checkpoints/builtin/` (the checkpoint folders, plus TRAINING.json: this run's
log); `python -m export.install_builtin OUT` unpacks them there. OUT/train_log.json is the full log: command,
seed, data version, versions, loss curves, held-out split, evaluation.

The text encoder must be the very T5 that serving uses: by default checkpoints/small/google-t5/t5-11b (built by
`make checkpoints`), else it is written with export.small_t5; its fingerprint (weights + token ids) is checked
against the one of the CPU build, and a mismatch stops the run before training (--allow_t5_mismatch to go on).
"""

from __future__ import annotations

import time

START = time.monotonic()  # a command-line run's budget counts from here: before torch & co. are imported

import argparse  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

from cosmos_triton.models.checkpoints import DiTArchitecture  # noqa: E402
from cosmos_triton.synthetic import DATA_VERSION  # noqa: E402
from export.train_dit import DiTTrainConfig  # noqa: E402
from export.train_tokenizer import TokenizerConfig  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILTIN_DIR = REPO_ROOT / "checkpoints" / "builtin"
DEFAULT_T5_DIR = REPO_ROOT / "checkpoints" / "small" / "google-t5" / "t5-11b"
# t5_fingerprint() of export.small_t5's CPU build (torch 2.13, transformers 5.23); tests/test_synthetic_training.py
# recomputes it, so it cannot go stale unnoticed.
EXPECTED_T5_FINGERPRINT = "34ff05c8f1c8ba0269e4bbdf8fde3736f0e96223330bf17d6b27dd091529e3a0"
TRAINING_JSON = "TRAINING.json"
TARS = {"tokenizer": "tokenizer.tar", "Text2World": "t2w.tar", "Video2World": "v2w.tar"}


@dataclass
class RunConfig:
    tokenizer: TokenizerConfig
    t2w_arch: DiTArchitecture
    t2w: DiTTrainConfig
    v2w: DiTTrainConfig
    pools: tuple[tuple[int, int, int], ...]  # (height, width, clips)
    tokenizer_end: float  # fractions of the budget at which a phase stops training
    t2w_end: float
    reserve_s: float  # kept for export + evaluation at the end
    eval_steps: int
    eval_cases: int | None  # None: all oracle cases
    eval_v2w_cases: int
    eval_resolution: tuple[int, int] = (96, 160)
    max_steps: tuple[int | None, int | None, int | None] = (None, None, None)  # tokenizer, T2W, V2W (tiny runs)
    checkpoint_every_s: float = 60.0

    @property
    def v2w_arch(self) -> DiTArchitecture:
        return replace(self.t2w_arch, model_type="Video2World")


FULL = RunConfig(
    tokenizer=TokenizerConfig(
        encoder_channels=(32, 64, 64, 64), decoder_channels=(64, 64, 64, 64), lr=2.5e-4, warmup_steps=50,
        clip_kinds=((33, 16, 96, 160, 0.6), (121, 4, 96, 160, 0.2), (33, 16, 128, 128, 0.1),
                    (33, 16, 160, 96, 0.1)),
        stats_clips=128, stats_resolution=(96, 160), init="pass_through", colour_weight=3.0, ema_decay=0.99,
        check_every=100),
    t2w_arch=DiTArchitecture(model_type="Text2World", model_channels=128, num_blocks=8, num_heads=2,
                             rope_scale=(2.0, 1.0, 1.0), adaln_lora_dim=32, max_size=(16, 32, 32)),
    t2w=DiTTrainConfig(batch=128, lr=6e-4, warmup_steps=100, ema_decay=0.995, p_mean=-0.4, p_std=1.6,
                       drop_to_zero=0.1, drop_to_negative=0.05, random_fps=0.2, refresh_per_step=4,
                       resolutions=((96, 160, 0.8), (160, 96, 0.1), (128, 128, 0.1))),
    v2w=DiTTrainConfig(batch=128, lr=3e-4, warmup_steps=50, ema_decay=0.99, p_mean=-0.4, p_std=1.6,
                       drop_to_zero=0.1, drop_to_negative=0.05, random_fps=0.2, refresh_per_step=4,
                       resolutions=((96, 160, 1.0),)),
    pools=((96, 160, 3072), (160, 96, 768), (128, 128, 768)),
    # the pass-through tokenizer already keeps colour at step 0 (Run 1's evaluation took 14 s): the budget goes to the
    # DiTs, whose samples decide colour and motion
    tokenizer_end=0.10, t2w_end=0.72, reserve_s=30.0, eval_steps=35, eval_cases=None, eval_v2w_cases=8,
)

# The FULL recipe at CPU scale (48x80 only, small batches, the same architectures and code path): evidence on a CPU
# host that the recipe learns colour and direction, e.g. `--config probe --minutes 45 --device cpu`.
PROBE = RunConfig(
    tokenizer=TokenizerConfig(
        encoder_channels=(32, 64, 64, 64), decoder_channels=(64, 64, 64, 64), lr=2e-4, warmup_steps=20,
        clip_kinds=((9, 8, 48, 80, 1.0),), stats_clips=16, stats_resolution=(48, 80), init="pass_through",
        colour_weight=3.0, ema_decay=0.99, check_every=25, check_shape=(17, 48, 80)),
    t2w_arch=FULL.t2w_arch,
    t2w=DiTTrainConfig(batch=16, lr=6e-4, warmup_steps=50, ema_decay=0.99, p_mean=-0.4, p_std=1.6,
                       drop_to_zero=0.1, drop_to_negative=0.05, random_fps=0.2, refresh_per_step=1,
                       resolutions=((48, 80, 1.0),)),
    v2w=DiTTrainConfig(batch=16, lr=3e-4, warmup_steps=20, ema_decay=0.98, p_mean=-0.4, p_std=1.6,
                       drop_to_zero=0.1, drop_to_negative=0.05, random_fps=0.2, refresh_per_step=1,
                       resolutions=((48, 80, 1.0),)),
    pools=((48, 80, 384),),
    tokenizer_end=0.05, t2w_end=0.72, reserve_s=420.0, eval_steps=35, eval_cases=None, eval_v2w_cases=4,
    eval_resolution=(48, 80), checkpoint_every_s=600.0,
)

# The recipe on a CPU host at the served resolution (96x160 only: a model trained at 48x80 alone meets untrained
# position-embedding rows at 96x160), batch 8, a short tokenizer phase (its pass-through start already carries
# colour; CPU steps barely move it), evaluation on 12 oracle cases, e.g. `--config cpu --minutes 80 --device cpu`.
CPU = RunConfig(
    tokenizer=replace(PROBE.tokenizer, check_every=10),
    t2w_arch=FULL.t2w_arch,
    t2w=replace(PROBE.t2w, batch=8, resolutions=((96, 160, 1.0),)),
    v2w=replace(PROBE.v2w, batch=8, resolutions=((96, 160, 1.0),)),
    pools=((96, 160, 192),),
    tokenizer_end=0.03, t2w_end=0.72, reserve_s=600.0, eval_steps=35, eval_cases=12, eval_v2w_cases=2,
    eval_resolution=(96, 160), checkpoint_every_s=600.0,
)

TINY = RunConfig(
    tokenizer=TokenizerConfig(encoder_channels=(8, 8, 8, 8), decoder_channels=(8, 8, 8, 8), lr=1e-3, warmup_steps=1,
                              clip_kinds=((17, 2, 32, 48, 1.0),), stats_clips=2, stats_resolution=(32, 48),
                              check_every=1, check_shape=(9, 32, 48)),
    t2w_arch=DiTArchitecture(model_type="Text2World", model_channels=32, num_blocks=1, num_heads=1,
                             rope_scale=(2.0, 1.0, 1.0), adaln_lora_dim=8, max_size=(16, 32, 32)),
    t2w=DiTTrainConfig(batch=2, lr=1e-3, warmup_steps=1, ema_decay=0.9, p_mean=-0.4, p_std=1.6, drop_to_zero=0.25,
                       drop_to_negative=0.25, random_fps=0.5, refresh_per_step=1, resolutions=((32, 48, 1.0),)),
    v2w=DiTTrainConfig(batch=2, lr=1e-3, warmup_steps=1, ema_decay=0.9, p_mean=-0.4, p_std=1.6, drop_to_zero=0.25,
                       drop_to_negative=0.25, random_fps=0.5, refresh_per_step=1, resolutions=((32, 48, 1.0),)),
    pools=((32, 48, 4),),
    tokenizer_end=0.3, t2w_end=0.6, reserve_s=5.0, eval_steps=2, eval_cases=2, eval_v2w_cases=1,
    eval_resolution=(32, 48), max_steps=(2, 3, 2), checkpoint_every_s=0.0,
)

def continued(cfg: RunConfig) -> RunConfig:
    """The recipe of a run that continues an earlier one (--resume): no tokenizer phase (the earlier run's tokenizer
    is kept, so the latents do not change under the DiTs), the DiTs restart their learning-rate schedule from their
    exported EMA weights at 2/3 of the peak (a warm restart), Text2World gets three quarters of the budget."""
    return replace(cfg, tokenizer_end=0.0, t2w_end=0.75, t2w=replace(cfg.t2w, lr=cfg.t2w.lr * 2 / 3),
                   v2w=replace(cfg.v2w, lr=cfg.v2w.lr * 2 / 3))


# A continuation (--resume only) for Text2World's motion: the first two GPU runs learnt colour (30/30) but not
# direction (6/30): their denoised estimates for "left" and "up" differed by 4 % at sigma 80, for "red" and "blue" by
# 91 % (benchmarks/small_model_sensitivity.py).
# Where an object starts and which way it goes is fixed early in sampling (high sigma), where ln sigma ~ N(-0.4, 1.6)
# puts 17 % of training above sigma 3; N(0.6, 1.4) puts 39 % there. Video2World (which follows its input frames) is
# kept as it is; the whole budget goes to Text2World. Batch 256 (Run 5): the step is launch-bound (128 clips 0.137 s,
# 256 clips 0.198 s), so 1.45x the time buys twice the samples, halving the gradient variance at the high sigmas
# that decide direction.
_CONTINUED = continued(FULL)
LAYOUT = replace(_CONTINUED, t2w_end=1.0, t2w=replace(_CONTINUED.t2w, p_mean=0.6, p_std=1.4, batch=256))

CONFIGS = {"full": FULL, "tiny": TINY, "probe": PROBE, "cpu": CPU, "layout": LAYOUT}
CONTINUATIONS = {"layout"}  # recipes that only continue an earlier run (--resume)


class Run:
    """Budget, log and output files of one training run."""

    def __init__(self, out: Path, budget_s: float, argv: list[str], start: float) -> None:
        self.out = out
        self.budget_s = budget_s
        self.start = start  # time.monotonic() the budget counts from
        self.work = Path(tempfile.mkdtemp(prefix="cosmos-small-train-"))  # never under OUT: only results go there
        self.builtin = self.work / "builtin"
        self.log: dict = {"command": "python -m export.train_small_models " + " ".join(argv), "started": time.time(),
                          "data_version": DATA_VERSION, "phases": {}}
        self._last_print = 0.0
        out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def at(self, fraction: float) -> float:
        """time.monotonic() at `fraction` of the budget."""
        return self.start + fraction * self.budget_s

    def progress(self, record: dict) -> None:
        if time.monotonic() - self._last_print > 10 or "phase" in record:
            print(json.dumps({"t": round(self.elapsed(), 1), **record}), flush=True)
            self._last_print = time.monotonic()

    def write_log(self) -> None:
        self.log["elapsed_s"] = round(self.elapsed(), 1)
        _atomic_write(self.out / "train_log.json", (json.dumps(self.log, indent=1) + "\n").encode())

    def write_tar(self, kind: str, folder: str) -> None:
        """OUT/<tar> with <folder>/* and TRAINING.json (this log, without the per-case rows)."""
        self.write_log()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path in sorted((self.builtin / folder).iterdir()):
                tar.add(path, arcname=f"{folder}/{path.name}")
            data = json.dumps(training_record(self.log), indent=1).encode() + b"\n"
            info = tarfile.TarInfo(TRAINING_JSON)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
        _atomic_write(self.out / TARS[kind], buf.getvalue())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def training_record(log: dict) -> dict:
    """What checkpoints/builtin/TRAINING.json keeps: everything but the per-case evaluation rows."""
    record = json.loads(json.dumps(log))
    for value in record.get("evaluation", {}).values():
        if isinstance(value, dict):
            value.pop("cases", None)
    record.get("evaluation", {}).pop("text2world_cases", None)
    return record


def code_digest() -> str:
    """sha256 of the files that define the data and the training, to tie a run to the source it ran."""
    h = hashlib.sha256()
    files = sorted([*(REPO_ROOT / "cosmos_triton" / "synthetic").glob("*.py"), *(REPO_ROOT / "export").glob("*.py")])
    for path in files:
        h.update(path.relative_to(REPO_ROOT).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _environment(device) -> dict:
    import diffusers
    import numpy
    import torch
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
           "transformers": transformers.__version__, "numpy": numpy.__version__, "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def load_t5(t5_dir: Path | None, work: Path, device, allow_mismatch: bool, run: Run):
    from cosmos_triton.models.text_encoder import T5TextEncoder
    from export.small_t5 import write_small_t5
    from export.training_data import t5_fingerprint

    t5 = None
    if t5_dir is not None and t5_dir.is_dir():
        try:
            t5, source = T5TextEncoder(t5_dir, device), str(t5_dir)
        except (OSError, ValueError) as err:  # e.g. files another transformers version cannot read
            source = f"written by export.small_t5 ({t5_dir} failed to load: {err})"
    else:
        source = f"written by export.small_t5 ({t5_dir} not found)"
    if t5 is None:
        t5 = T5TextEncoder(write_small_t5(work / "t5"), device)
    fingerprint = t5_fingerprint(t5)
    run.log["t5"] = {"source": source, "fingerprint": fingerprint, "expected": EXPECTED_T5_FINGERPRINT,
                     "match": fingerprint == EXPECTED_T5_FINGERPRINT}
    if fingerprint != EXPECTED_T5_FINGERPRINT and not allow_mismatch:
        run.write_log()
        raise SystemExit(f"T5 fingerprint {fingerprint} != expected {EXPECTED_T5_FINGERPRINT}: this T5 differs from "
                         "the one serving uses (carry checkpoints/small/google-t5, or --allow_t5_mismatch)")
    return t5


def resumed_record(previous: dict) -> dict:
    """What a continuing run keeps of the run it starts from (recursively: that run's own resumed_from)."""
    keep = ("command", "seed", "data_version", "git_commit", "code_digest", "budget_s", "elapsed_s", "environment",
            "resumed_from", "outputs", "phases", "evaluation")
    return training_record({k: previous[k] for k in keep if k in previous})


def take_earlier_run(resume: Path, builtin: Path) -> dict:
    """Copy the files of the run to continue into `builtin` and return its log: `resume` is that run's OUT folder
    (tars + train_log.json) or an installed checkpoints/builtin (component folders + TRAINING.json)."""
    from export.install_builtin import install
    from export.make_small_checkpoints import BUILTIN_FILES, trained_components

    if (resume / "train_log.json").is_file():
        install(resume, builtin, log_copy=None)
        return json.loads((resume / "train_log.json").read_text())
    if not (resume / TRAINING_JSON).is_file() or set(trained_components(resume)) != set(BUILTIN_FILES):
        raise FileNotFoundError(f"{resume}: neither a training run's OUT folder (train_log.json and tars) nor an "
                                f"installed checkpoints/builtin (the three component folders and {TRAINING_JSON})")
    for folder in BUILTIN_FILES:
        shutil.copytree(resume / folder, builtin / folder)
    return json.loads((resume / TRAINING_JSON).read_text())


def tokenizer_phase(cfg: RunConfig, run: Run, seed: int, device, resume: Path | None) -> None:
    """Train and export the tokenizer into run.builtin, or install the earlier run's files there (--resume)."""
    from cosmos_triton.models.checkpoints import TOKENIZER_DIR
    from export.train_tokenizer import export_tokenizer, latent_statistics, train_tokenizer

    if resume is not None:
        run.log["resumed_from"] = resumed_record(take_earlier_run(resume, run.builtin))
        run.log["phases"]["tokenizer"] = {"steps": 0, "kept_from": str(resume)}
    else:
        vae, summary = train_tokenizer(cfg.tokenizer, seed, device, run.at(cfg.tokenizer_end), cfg.max_steps[0],
                                       run.progress)
        run.log["phases"]["tokenizer"] = summary
        stats = latent_statistics(vae, cfg.tokenizer, seed, device)
        export_tokenizer(vae, stats, cfg.tokenizer, run.builtin / TOKENIZER_DIR, run.work)
        del vae
    run.write_tar("tokenizer", TOKENIZER_DIR)


def evaluate_exported(cfg: RunConfig, run: Run, device, tokenizer, t5) -> None:
    """The oracle evaluation of the exported DiTs -> run.log["evaluation"], OUT/samples.npz."""
    from cosmos_triton.models.dit import load_dit
    from cosmos_triton.synthetic.oracle import oracle_cases
    from export.evaluate_small_models import evaluate, save_samples
    from export.small_dit import SMALL_DIT_DIR, SMALL_V2W_DIT_DIR

    t0 = time.monotonic()
    cases = spread_cases(oracle_cases(), cfg.eval_cases) if cfg.eval_cases else None
    report, samples = evaluate(load_dit(run.builtin / SMALL_DIT_DIR, device),
                               load_dit(run.builtin / SMALL_V2W_DIT_DIR, device), tokenizer, t5,
                               num_steps=cfg.eval_steps, cases=cases, v2w_cases=cfg.eval_v2w_cases,
                               resolution=cfg.eval_resolution)
    report["seconds"] = round(time.monotonic() - t0, 1)
    run.log["evaluation"] = report
    save_samples(run.out / "samples.npz", samples)
    run.progress({"phase": "evaluated", "text2world": report["text2world"]["all"]})


def train(cfg: RunConfig, run: Run, seed: int, device, t5_dir: Path | None, allow_t5_mismatch: bool,
          evaluate_at_end: bool = True, resume: Path | None = None) -> None:
    import torch

    from cosmos_triton.models.checkpoints import TOKENIZER_DIR
    from cosmos_triton.models.tokenizer import CosmosVideoTokenizer
    from cosmos_triton.request.envelope import DEFAULT_NEGATIVE_PROMPT, SMALL_ENVELOPE, SMALL_V2W_ENVELOPE
    from cosmos_triton.synthetic.captions import EVAL_TEMPLATES, TRAIN_TEMPLATES
    from cosmos_triton.synthetic.scenes import HELD_OUT_PAIRS
    from export.small_dit import SMALL_DIT_DIR, SMALL_V2W_DIT_DIR
    from export.train_dit import build_trainable, load_trainable, train_dit, video2world_from_text2world, write_dit
    from export.training_data import LatentPool, embed_captions, full_context

    log = run.log
    log.update(seed=seed, environment=_environment(device), git_commit=_git_commit(), code_digest=code_digest(),
               budget_s=run.budget_s, config=json.loads(json.dumps(asdict(cfg), default=str)),
               held_out={"colour_motion_pairs": sorted(map(list, HELD_OUT_PAIRS)),
                         "phrasing_templates": list(EVAL_TEMPLATES), "training_templates": list(TRAIN_TEMPLATES)})
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    t5 = load_t5(t5_dir, run.work, device, allow_t5_mismatch, run)
    negative = full_context(embed_captions(t5, [DEFAULT_NEGATIVE_PROMPT], tokens=512)).to(device)
    run.progress({"phase": "setup done", "t5": log["t5"]["match"]})

    # 1. tokenizer (a continuing run keeps the earlier run's files, the DiTs included, and starts from them)
    tokenizer_phase(cfg, run, seed, device, resume)
    tokenizer = CosmosVideoTokenizer(run.builtin / TOKENIZER_DIR, device)
    run.progress({"phase": "tokenizer exported", "steps": log["phases"]["tokenizer"]["steps"]})

    # 2. latent pools (refreshed while the DiTs train)
    t0 = time.monotonic()
    pools = {}
    for i, (height, width, size) in enumerate(cfg.pools):
        pools[(height, width)] = LatentPool.empty(size, height, width, t5.embed_dim, seed * 1000 + 100 + i, device)
        pools[(height, width)].fill(tokenizer, t5)
    log["pools"] = {"fill_seconds": round(time.monotonic() - t0, 1),
                    "sizes": {f"{h}x{w}": p.size for (h, w), p in pools.items()}}
    run.progress({"phase": "pools filled", **log["pools"]})

    def refresh(pool: LatentPool, n: int) -> None:
        pool.refresh(n, tokenizer, t5)

    def saver(kind: str, folder: str, arch, envelope):
        def save(state) -> None:
            write_dit(run.builtin / folder, state, arch, envelope, seed, keep_unused=resume is not None)
            run.write_tar(kind, folder)
        return save

    # 3. Text2World
    t2w = (build_trainable(cfg.t2w_arch, seed, device) if resume is None
           else load_trainable(run.builtin / SMALL_DIT_DIR, cfg.t2w_arch, device))
    save_t2w = saver("Text2World", SMALL_DIT_DIR, cfg.t2w_arch, SMALL_ENVELOPE)
    end = run.start + run.budget_s - cfg.reserve_s
    t2w_state, summary = train_dit(t2w, cfg.t2w_arch, cfg.t2w, pools, refresh, negative, seed,
                                   min(run.at(cfg.t2w_end), end),
                                   cfg.max_steps[1], run.progress, save_t2w, cfg.checkpoint_every_s)
    log["phases"]["text2world"] = summary
    save_t2w(t2w_state)
    run.progress({"phase": "text2world saved", "steps": summary["steps"]})

    # 4. Video2World, from the Text2World weights (a continuation: from the earlier Video2World)
    if resume is None:
        v2w = build_trainable(cfg.v2w_arch, seed + 1, device)
        video2world_from_text2world(t2w_state, v2w)
    else:
        v2w = load_trainable(run.builtin / SMALL_V2W_DIT_DIR, cfg.v2w_arch, device)
    del t2w, t2w_state
    v2w_pools = {k: v for k, v in pools.items() if k in {(h, w) for h, w, _ in cfg.v2w.resolutions}}
    save_v2w = saver("Video2World", SMALL_V2W_DIT_DIR, cfg.v2w_arch, SMALL_V2W_ENVELOPE)
    v2w_state, summary = train_dit(v2w, cfg.v2w_arch, cfg.v2w, v2w_pools, refresh, negative, seed + 1, end,
                                   cfg.max_steps[2], run.progress, save_v2w, cfg.checkpoint_every_s)
    log["phases"]["video2world"] = summary
    save_v2w(v2w_state)
    del v2w, v2w_state, pools
    if device.type == "cuda":
        torch.cuda.empty_cache()
    run.progress({"phase": "video2world saved", "steps": summary["steps"]})

    # 5. evaluation with the exported files, if the budget allows
    if evaluate_at_end and run.budget_s - run.elapsed() > 0.5 * cfg.reserve_s:
        evaluate_exported(cfg, run, device, tokenizer, t5)
    else:
        log["evaluation"] = {"skipped": f"{run.budget_s - run.elapsed():.0f} s left"}
    folders = {"tokenizer": TOKENIZER_DIR, "Text2World": SMALL_DIT_DIR, "Video2World": SMALL_V2W_DIT_DIR}
    log["outputs"] = {f"{folder}/{path.name}": {"bytes": path.stat().st_size,
                                                "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
                      for folder in folders.values() for path in sorted((run.builtin / folder).iterdir())}
    log["finished"] = True
    for kind, folder in folders.items():
        run.write_tar(kind, folder)  # every tar with the final TRAINING.json
    run.write_log()


def spread_cases(cases: list, n: int) -> list:
    """n of the 24 colour x direction oracle cases (in oracle_cases()' colour-major order), every colour about as
    often as every direction: colour c's k-th pick is direction (c + k) mod 4."""
    grid = cases[:24]
    order = sorted(range(len(grid)), key=lambda i: ((i % 4 - i // 4) % 4, i // 4))
    return [grid[i] for i in order[:n]]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="results folder (tars, train_log.json, samples)")
    parser.add_argument("--minutes", type=float, default=7.5, help="wall-clock budget of the whole run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--t5_dir", type=Path, default=DEFAULT_T5_DIR)
    parser.add_argument("--allow_t5_mismatch", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="smoke configuration: tiny models, a few steps")
    parser.add_argument("--config", choices=sorted(CONFIGS), default=None,
                        help="full (default), tiny (= --tiny), probe (the full recipe at CPU scale, 48x80), cpu "
                             "(the recipe on CPU at 96x160) or layout (a continuation: --resume)")
    parser.add_argument("--no_eval", action="store_true", help="skip the evaluation at the end")
    parser.add_argument("--resume", type=Path, default=None,
                        help="continue an earlier run: its OUT folder (tars and train_log.json) or an installed "
                             "checkpoints/builtin; keeps its tokenizer, "
                             "restarts the DiTs' schedules from its exported weights (see continued())")
    args = parser.parse_args(argv)

    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = "tiny" if args.tiny else (args.config or "full")
    if name in CONTINUATIONS and args.resume is None:
        parser.error(f"--config {name} continues an earlier run: give --resume")
    cfg = CONFIGS[name] if args.resume is None or name in CONTINUATIONS else continued(CONFIGS[name])
    budget = args.minutes * 60 if name != "tiny" else max(args.minutes * 60, 600.0)
    # from process start on the command line; from this call when called in a longer-lived process (the tests)
    run = Run(args.out, budget, argv, START if __name__ == "__main__" else time.monotonic())
    try:
        train(cfg, run, args.seed, device, args.t5_dir, args.allow_t5_mismatch, evaluate_at_end=not args.no_eval,
              resume=args.resume)
    except BaseException as err:  # keep whatever was written, and say why it stopped
        run.log["error"] = f"{type(err).__name__}: {err}"
        run.write_log()
        raise
    print(json.dumps({"done": round(run.elapsed(), 1), "out": str(args.out),
                      "files": sorted(p.name for p in args.out.iterdir())}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
