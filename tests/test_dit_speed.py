"""DiT `exact` speed mode on CPU: our attention processor and block loop are bit-identical to diffusers' eager path;
compiled blocks stay within the deviation of swapping one attention kernel for another; warm-up compiles once per
shape and an unwarmed shape never compiles inside a request; compile caches persist across processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers.models.normalization import RMSNorm

from cosmos_triton.models.dit import (
    ORIGINAL_QK_NORM_EPS,
    CosmosDiT,
    OriginalLearnablePosEmbed,
    OriginalRMSNorm,
    OriginalRotaryPosEmbed,
    build_model,
)
from cosmos_triton.models.dit_speed import (
    MEGA_CACHE_FILE,
    CosmosSpeedAttnProcessor,
    DiTSpeed,
    FastCosmosDiT,
    resolve_attention,
)
from export.small_dit import SMALL_T2W, SMALL_V2W, small_state_dict

ROOT = Path(__file__).resolve().parent.parent
LATENT = (1, 16, 4, 16, 24)


def make_net(arch=SMALL_T2W) -> CosmosDiT:
    return CosmosDiT(build_model(arch, small_state_dict(arch)), arch)


def inputs(arch=SMALL_T2W, latent=LATENT, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*latent, generator=gen).bfloat16()
    context = torch.randn(1, 32, 1024, generator=gen).bfloat16()
    mask = torch.zeros(1, 1, *latent[2:]).bfloat16() if arch.model_type == "Video2World" else None
    mask = None if mask is None else mask.index_fill(2, torch.tensor([0]), 1.0)  # first frame conditioned
    return x, torch.tensor([0.3]).bfloat16(), context, 24.0, mask


def deviation(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """max |out - ref| and the relative L2 ||out - ref|| / ||ref||."""
    d = out.double() - ref.double()
    return d.abs().max().item(), (d.norm() / ref.double().norm()).item()


@pytest.mark.parametrize("arch", [SMALL_T2W, SMALL_V2W], ids=["t2w", "v2w"])
@torch.no_grad()
def test_exact_eager_is_bit_identical_to_diffusers(arch):
    net = make_net(arch)
    args = inputs(arch)
    stock = net(*args)  # diffusers' CosmosAttnProcessor2_0 and CosmosTransformer3DModel.forward
    fast = DiTSpeed(attention="sdpa", compile=False, cache=None).apply(net)
    assert isinstance(fast, FastCosmosDiT)
    assert (fast.dtype, fast.device, fast.arch) == (net.dtype, net.device, net.arch)
    assert all(isinstance(b.attn1.processor, CosmosSpeedAttnProcessor) for b in net.model.transformer_blocks)
    assert torch.equal(fast(*args), stock)
    assert torch.equal(fast.reference(*args), stock)  # the eager reference path: diffusers' forward, same bits


@torch.no_grad()
def test_attention_backend_swap_changes_bits_but_little():
    """The noise scale the compiled path is held to: CPU flash attention (SDPA's pick) vs the math kernel."""
    net = make_net()
    args = inputs()
    flash = DiTSpeed(attention="flash", compile=False, cache=None).apply(net)(*args)
    math = DiTSpeed(attention="math", compile=False, cache=None).apply(net)(*args)
    max_abs, rel = deviation(math, flash)
    assert 0 < rel < 0.02 and max_abs < 0.25


def test_original_numerics_modules_survive_apply():
    net = make_net()
    table = net.model.rope(torch.zeros(1, 18, 4, 16, 24), fps=24.0)
    DiTSpeed(attention="sdpa", compile=True, cache=None).apply(net)
    model = net.model
    assert type(model.rope) is OriginalRotaryPosEmbed
    assert type(model.learnable_pos_embed) is OriginalLearnablePosEmbed
    assert model.rope(torch.zeros(1, 18, 4, 16, 24), fps=24.0) is table  # the cached bf16-angle table, unchanged
    for block in model.transformer_blocks:
        for attn in (block.attn1, block.attn2):
            assert type(attn.norm_q) is OriginalRMSNorm and attn.norm_q.eps == ORIGINAL_QK_NORM_EPS
            assert type(attn.norm_k) is OriginalRMSNorm and attn.norm_k.eps == ORIGINAL_QK_NORM_EPS


@torch.no_grad()
def test_compiled_rmsnorm_rounds_once_like_eager():
    """Inductor keeps the original's single-rounding RMSNorm bit for bit; diffusers' formula would not."""
    gen = torch.Generator().manual_seed(0)
    norm = OriginalRMSNorm(32, eps=1e-6)
    norm.weight.data = 1 + 0.1 * torch.randn(32, generator=gen)
    norm = norm.bfloat16()
    x = torch.randn(1, 2, 384, 32, generator=gen).bfloat16()
    eager = norm(x)
    compiled = torch.compile(norm, dynamic=False, options=DiTSpeed().compile_options())(x)
    assert torch.equal(compiled, eager)
    norm.__class__ = RMSNorm
    assert (norm(x) != eager).float().mean() > 0.1  # the test can tell the two roundings apart


def test_resolve_attention_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_attention("auto", cpu, torch.bfloat16) == "sdpa"
    with pytest.raises(RuntimeError, match="fa3"):
        resolve_attention("fa3", cpu, torch.bfloat16)
    with pytest.raises(ValueError, match="attention must be one of"):
        resolve_attention("xformers", cpu, torch.bfloat16)
    with pytest.raises(ValueError, match="needs attention='fa3'"):
        CosmosSpeedAttnProcessor("sdpa", fp8=True)


@torch.no_grad()
def test_compiled_exact_within_kernel_noise_and_warm_up_never_compiles_in_a_request(tmp_path, monkeypatch):
    import torch._dynamo
    from torch._dynamo.utils import counters

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    torch._dynamo.reset()
    counters.clear()
    net = make_net()
    args = inputs()
    eager = net(*args)
    flash_vs_math = deviation(DiTSpeed(attention="math", compile=False, cache=None).apply(net)(*args), eager)
    speed = DiTSpeed(attention="sdpa", compile=True, cache="teacache", fullgraph=True, cache_dir=tmp_path)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    fast = speed.apply(net)
    report = speed.warm_up(fast, [LATENT[1:]], fps=24.0, context_tokens=32)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 1  # one graph serves every block (fullgraph: no breaks)
    assert report["shapes"] == [list(LATENT[1:])] and report["second_call_s"][0] < report["first_call_s"][0]
    assert (tmp_path / MEGA_CACHE_FILE).stat().st_size > 0

    compiled = fast(*args)
    max_abs, rel = deviation(compiled, eager)
    print(f"compiled vs eager: max abs {max_abs:.4g}, rel L2 {rel:.4g}; math vs flash kernel: "
          f"max abs {flash_vs_math[0]:.4g}, rel L2 {flash_vs_math[1]:.4g}")
    assert rel <= 2 * flash_vs_math[1] and max_abs <= 2 * flash_vs_math[0]
    # the bound can fail: dropping RoPE (a wrong processor) lands far outside it
    no_rope = make_net()
    for block in no_rope.model.transformer_blocks:
        block.attn1.set_processor(_NoRope("sdpa"))
    assert deviation(no_rope(*args), eager)[1] > 2 * flash_vs_math[1]

    # a shape that was not warmed runs eager (same bits as eager) instead of compiling inside the request
    other = (1, 16, 2, 16, 16)
    x2 = torch.randn(*other, generator=torch.Generator().manual_seed(1)).bfloat16()
    out2 = fast(x2, *args[1:])
    assert counters["stats"]["unique_graphs"] == graphs
    assert torch.equal(out2, net(x2, *args[1:]))
    with fast.step("s", 0.5):  # the cached path uses the same compiled blocks
        fast(*args)
    assert counters["stats"]["unique_graphs"] == graphs


class _NoRope(CosmosSpeedAttnProcessor):
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):  # noqa: ARG002
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, None)


_CACHE_PROBE = """
import json, sys, torch
from torch._dynamo.utils import counters
from cosmos_triton.models.dit import CosmosDiT, build_model
from cosmos_triton.models.dit_speed import DiTSpeed
from export.small_dit import SMALL_T2W, small_state_dict
net = CosmosDiT(build_model(SMALL_T2W, small_state_dict(SMALL_T2W)), SMALL_T2W)
speed = DiTSpeed(attention="sdpa", compile=True, cache=None, cache_dir=sys.argv[1])
fast = speed.apply(net)
report = speed.warm_up(fast, [(16, 4, 16, 24)], context_tokens=32)
print(json.dumps({"hit": counters["inductor"]["fxgraph_cache_hit"], "miss": counters["inductor"]["fxgraph_cache_miss"],
                  "first_call_s": report["first_call_s"][0]}))
"""


def _probe(cache_dir: Path, inductor_dir: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    if inductor_dir is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_dir)
    out = subprocess.run([sys.executable, "-c", _CACHE_PROBE, str(cache_dir)], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_compile_caches_persist_across_restarts(tmp_path):
    """A restart with the same cache_dir reuses Inductor's on-disk cache; a machine with an empty Inductor cache
    but the mega-cache file gets the same hits (torch.compiler.load_cache_artifacts)."""
    first = _probe(tmp_path / "a")
    assert first["miss"] > 0 and first["hit"] == 0
    restart = _probe(tmp_path / "a")
    assert restart["hit"] > 0 and restart["miss"] == 0
    moved = tmp_path / "b"
    moved.mkdir()
    (moved / MEGA_CACHE_FILE).write_bytes((tmp_path / "a" / MEGA_CACHE_FILE).read_bytes())
    fresh = _probe(moved, inductor_dir=tmp_path / "empty-inductor")
    assert fresh["hit"] > 0 and fresh["miss"] == 0
    print(f"first call: cold {first['first_call_s']} s, restart {restart['first_call_s']} s, "
          f"mega-cache only {fresh['first_call_s']} s")
