"""DiT speed modes (issue #11): attention backend, regional compile, FP8, step caching, behind one load-time API.

    speed = DiTSpeed(attention="auto", compile=True, fp8=False, cache_dir="/models/.compile-cache")
    net = speed.apply(load_dit(path, device="cuda"))        # CosmosDiT-compatible
    speed.warm_up(net, [(16, 16, 88, 160)], fps=24.0)        # at load, before readiness: compiles every shape
    ...
    with net.step(session=request_id, threshold=0.3, final=is_last) as step:   # per dit_step call
        x0 = guided_x0(net, x, sigma, cond, uncond, guidance, fps, condition)
    step.skipped                                              # 0..2 branch evaluations skipped by the cache

`exact` keeps the original's bf16 arithmetic: our attention processor does what diffusers'
`CosmosAttnProcessor2_0` does (same projections, QK RMSNorm of `models/dit.py`, the same RoPE application on the
cached angle table) and only routes the attention product to the chosen kernel; eager with `attention="sdpa"` it
is bit-identical to diffusers' processor (tested). The block loop is ours (bit-identical to
`CosmosTransformer3DModel.forward` for the Cosmos-1.0 configuration, tested) so the step cache can skip blocks;
each transformer block is compiled on its own (regional compile, one graph shared by all blocks), with Inductor's
`emulate_precision_casts` so fused kernels round where eager bf16 rounds. CUDA graphs are not used: a 7B forward
is 3-4 s of ~1,100 kernel launches, so launch overhead is ~0.2 % and already hidden by the queue
(acceleration-reference §3.2.4; cosmos-predict2 #44 recommends them only for small text2image).

The eager reference stays available: the wrapped `CosmosDiT` (`FastCosmosDiT.reference`) runs diffusers' forward
uncompiled, and with `attention="sdpa"` gives the same bits as before `apply`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from cosmos_triton.models.dit import CosmosDiT
from cosmos_triton.models.dit_fp8 import FP8_BACKENDS, FP8_POLICIES, apply_fp8, smooth_and_quantize_attention
from cosmos_triton.models.step_cache import BRANCHES, METHODS, StepCache

log = logging.getLogger(__name__)

ATTENTION_BACKENDS = ("auto", "sdpa", "cudnn", "fa3", "flash", "efficient", "math")
_SDPA_FORCED = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
MEGA_CACHE_FILE = "mega_cache.bin"
WARM_RECOMPILE_LIMIT = 8  # Dynamo's default; raised when more shapes are warmed


@functools.cache
def fa3_function() -> Callable | None:
    """FlashAttention-3's `flash_attn_func` ([B, L, H, D] in and out): the `fa3_fwd` wheel's forward-only build,
    or the upstream hopper build's module name. None when neither is importable."""
    for module in ("fa3_fwd_interface", "flash_attn_interface"):
        try:
            return __import__(module).flash_attn_func
        except (ImportError, AttributeError, OSError):
            continue
    return None


def resolve_attention(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """'auto' -> FA3 on Hopper when its wheel is importable (bf16; 3.99 s vs 4.24 s cuDNN per 7B forward,
    acceleration-reference §2b), else torch's SDPA (cuDNN on sm90 with torch >= 2.11)."""
    if requested not in ATTENTION_BACKENDS:
        raise ValueError(f"attention must be one of {ATTENTION_BACKENDS}, got {requested!r}")
    fa3_ok = (device.type == "cuda" and dtype == torch.bfloat16 and fa3_function() is not None
              and torch.cuda.get_device_capability(device)[0] == 9)
    if requested == "auto":
        return "fa3" if fa3_ok else "sdpa"
    if requested == "fa3" and not fa3_ok:
        raise RuntimeError("attention='fa3' needs the fa3_fwd (or flash_attn_interface) wheel, a Hopper GPU and bf16")
    return requested


class CosmosSpeedAttnProcessor:
    """diffusers' `CosmosAttnProcessor2_0` for Cosmos-1.0 (no mask, heads of K/V equal to Q's), with the attention
    product routed to `backend`. Projections, QK norm and RoPE are the same calls in the same order; for SDPA
    backends K and V are made contiguous [B, H, L, D] as diffusers' `repeat_interleave` does, so the kernels see
    identical inputs. FA3 takes [B, L, H, D], which is the projections' own layout (no copies)."""

    def __init__(self, backend: str, fp8: bool = False) -> None:
        if backend == "auto":
            raise ValueError("resolve 'auto' first (resolve_attention)")
        if fp8 and backend != "fa3":
            raise ValueError("FP8 attention is FA3's FP8 forward: it needs attention='fa3'")
        self.backend = backend
        self.fp8 = fp8

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: Any = None) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError("the Cosmos-1.0 DiT attends without a mask")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = attn.norm_q(attn.to_q(hidden_states).unflatten(2, (attn.heads, -1)).transpose(1, 2))
        key = attn.norm_k(attn.to_k(context).unflatten(2, (attn.heads, -1)).transpose(1, 2))
        value = attn.to_v(context).unflatten(2, (attn.heads, -1)).transpose(1, 2)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, use_real=True, use_real_unbind_dim=-2)
            key = apply_rotary_emb(key, image_rotary_emb, use_real=True, use_real_unbind_dim=-2)
        out = self.attend(query, key, value)  # [B, L, H, D]
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """[B, H, L, D] views in, [B, L, H, D] out."""
        if self.backend == "fa3":
            q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
            flash_attn_func = fa3_function()
            if self.fp8:
                q8, k8, v8, qs, ks, vs = smooth_and_quantize_attention(q, k, v)
                out = flash_attn_func(q8, k8, v8, q_descale=qs, k_descale=ks, v_descale=vs)  # type: ignore[misc]
            else:
                out = flash_attn_func(q, k, v)  # type: ignore[misc]
            out = out[0] if isinstance(out, tuple) else out  # older upstream builds also return the LSE
            return out.to(query.dtype)
        key, value = key.contiguous(), value.contiguous()
        if self.backend == "sdpa":
            out = F.scaled_dot_product_attention(query, key, value)
        else:
            with sdpa_kernel([_SDPA_FORCED[self.backend]]):
                out = F.scaled_dot_product_attention(query, key, value)
        return out.permute(0, 2, 1, 3)


def set_attention(model: Any, backend: str, fp8_self_attention: bool = False) -> None:
    """Install our processor on every attention of the transformer blocks (cross-attention never FP8)."""
    for block in model.transformer_blocks:
        block.attn1.set_processor(CosmosSpeedAttnProcessor(backend, fp8=fp8_self_attention))
        block.attn2.set_processor(CosmosSpeedAttnProcessor(backend))


@dataclass
class StepReport:
    """One guided evaluation under `FastCosmosDiT.step`: which branches ran and how many the cache skipped."""

    session: Hashable
    threshold: float
    final: bool
    branches: list[str] = field(default_factory=list)
    skipped: int = 0
    session_stats: dict[str, dict[str, int]] | None = None  # counters of the session after this step
    plan: tuple[str, ...] = BRANCHES  # the branches this scope's calls evaluate, in call order


class FastCosmosDiT(nn.Module):
    """A `CosmosDiT` with the speed settings applied: same call signature, `.dtype`, `.device`, `.arch`, `.model`.

    Outside `step(...)` every call is the plain (uncached) path. Inside, the calls are the branches of one guided
    evaluation in `guided_x0`'s order: the first is "cond", the second "uncond"; a third raises. (A CFG-parallel
    rank evaluates one branch: `step(..., branches=("uncond",))`.)

    Two hooks, identity here, let a subclass run the blocks on a shard of the token sequence
    (cosmos_triton/parallel/context.py): `_shard_sequence` after the patch embedding, `_gather_sequence` after the
    final layer."""

    def __init__(self, net: CosmosDiT, blocks: Sequence[Callable], cache: StepCache | None, settings: dict) -> None:
        super().__init__()
        self.reference = net  # diffusers' forward, eager: the reference path
        self._blocks = list(blocks)  # compiled wrappers (sharing the blocks' weights) or the blocks themselves
        self.cache = cache
        self.settings = settings
        self.warm_shapes: set[tuple[int, ...]] = set()
        self._local = threading.local()

    @property
    def model(self) -> Any:  # CosmosTransformer3DModel
        return self.reference.model

    @property
    def arch(self):
        return self.reference.arch

    @property
    def dtype(self) -> torch.dtype:
        return self.reference.dtype

    @property
    def device(self) -> torch.device:
        return self.reference.device

    # --- per request ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, session: Hashable, threshold: float, final: bool = False,
             branches: Sequence[str] = BRANCHES) -> Iterator[StepReport]:
        """Scope of one guided evaluation of request `session` with the cache threshold of that request
        (<= 0: off, bit-identical to no cache). `final`: the last (clean x0) evaluation, always computed, after
        which the session's cache is freed. `branches`: what the calls in the scope evaluate, in order."""
        if getattr(self._local, "scope", None) is not None:
            raise RuntimeError("FastCosmosDiT.step scopes do not nest")
        if not branches or any(b not in BRANCHES for b in branches):
            raise ValueError(f"branches must be a non-empty sequence of {BRANCHES}, got {branches!r}")
        report = StepReport(session=session, threshold=float(threshold), final=bool(final), plan=tuple(branches))
        self._local.scope = report
        try:
            yield report
        finally:
            self._local.scope = None
            if self.cache is not None:
                report.session_stats = (self.cache.end_session(session) if report.final
                                        else self.cache.stats(session))

    # --- forward --------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor, fps: float,
                condition_mask: torch.Tensor | None = None) -> torch.Tensor:
        scope: StepReport | None = getattr(self._local, "scope", None)
        if scope is not None:
            if len(scope.branches) == len(scope.plan):
                raise RuntimeError(f"this step scope evaluates {len(scope.plan)} branch(es) {scope.plan}; "
                                   "got one call more")
            scope.branches.append(scope.plan[len(scope.branches)])
        m: Any = self.model
        b, _, t, h, w = x.shape
        channels = [x] if condition_mask is None else [x, condition_mask.to(x.dtype)]
        channels.append(x.new_zeros(b, 1, t, h, w))  # padding mask (CosmosDiT's convention)
        hidden = torch.cat(channels, dim=1)
        rope = m.rope(hidden, fps=fps)
        pos = m.learnable_pos_embed(hidden)
        pt, ph, pw = m.config.patch_size
        tokens = m.patch_embed(hidden).flatten(1, 3)
        if c_noise.ndim != 1:
            raise ValueError(f"c_noise must be [B], got {tuple(c_noise.shape)}")
        temb, emb = m.time_embed(tokens, c_noise)
        tokens, rope, pos = self._shard_sequence(tokens, rope, pos)
        args = (context, emb, temb, rope, pos)
        with self._stance():
            if scope is None or self.cache is None or scope.threshold <= 0:
                out = self._run_blocks(self._blocks, tokens, args)
            else:
                out = self._cached_blocks(scope, scope.branches[-1], tokens, c_noise, args)
        out = self._gather_sequence(m.proj_out(m.norm_out(out, emb, temb)))
        out = out.unflatten(2, (ph, pw, pt, -1)).unflatten(1, (t // pt, h // ph, w // pw))
        return out.permute(0, 7, 1, 6, 2, 4, 3, 5).flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def _shard_sequence(self, tokens: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], pos: torch.Tensor
                        ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Tokens [B, L, D], the RoPE (cos, sin) [L, head_dim] and the position embedding [B, L, D] the blocks run
        on. Identity: every token here."""
        return tokens, rope, pos

    def _gather_sequence(self, out: torch.Tensor) -> torch.Tensor:
        """The final layer's output [B, L_local, patch * channels] -> all L tokens. Identity here."""
        return out

    @staticmethod
    def _run_blocks(blocks: Sequence[Callable], hidden: torch.Tensor, args: tuple) -> torch.Tensor:
        for block in blocks:
            hidden = block(hidden, *args)
        return hidden

    def _cached_blocks(self, scope: StepReport, branch: str, tokens: torch.Tensor, c_noise: torch.Tensor,
                       args: tuple) -> torch.Tensor:
        cache = self.cache
        assert cache is not None
        state = cache.branch(scope.session, branch, tuple(tokens.shape), float(c_noise.float().max()))
        if cache.method == "teacache":
            # block 0's AdaLN-modulated input, before the per-block position embedding (TeaCache4Cosmos)
            modulated = self.model.transformer_blocks[0].norm1(tokens, args[1], args[2])[0]
            if cache.teacache_skip(state, modulated, scope.threshold, scope.final):
                scope.skipped += 1
                return tokens + state.residual  # type: ignore[operator]  # set whenever a skip is allowed
            out = self._run_blocks(self._blocks, tokens, args)
            state.residual = out - tokens
            return out
        first = self._blocks[0](tokens, *args)
        if cache.fbcache_skip(state, first - tokens, scope.threshold, scope.final):
            scope.skipped += 1
            return first + state.residual  # type: ignore[operator]
        out = self._run_blocks(self._blocks[1:], first, args)
        state.residual = out - first
        return out

    def _stance(self) -> contextlib.AbstractContextManager:
        """After warm-up a shape that was not warmed runs eager instead of compiling inside a request."""
        if not self.settings.get("compile") or not self.warm_shapes:
            return contextlib.nullcontext()
        return torch.compiler.set_stance("eager_on_recompile")


class DiTSpeed:
    """Load-time speed settings of the DiT (per deployment); the cache threshold is per request (`step`).

    attention: auto | sdpa | cudnn | fa3 (| flash | efficient | math, for diagnosis)
    compile: regional torch.compile of each transformer block (Inductor), warmed by `warm_up`
    fp8: FP8 GEMMs (sm_89+); fp8_backend scaled_mm | torchao; fp8_policy qk_bf16 | all
    fp8_attention: FA3's FP8 forward for self-attention (needs attention fa3)
    cache: teacache | fbcache | None; max_sessions / session_ttl_s bound its memory
    compile_backend: torch.compile backend (inductor; aot_eager for fast CPU checks of the tracing)
    cache_dir: persistent compile caches (TORCHINDUCTOR_CACHE_DIR=<cache_dir>/inductor, plus a portable
        mega-cache file written after warm-up and loaded at `apply`)
    """

    def __init__(self, attention: str = "auto", compile: bool = True, fp8: bool = False,
                 fp8_backend: str = "scaled_mm", fp8_policy: str = "qk_bf16", fp8_attention: bool = False,
                 cache: str | None = "teacache", max_sessions: int = 4, session_ttl_s: float = 900.0,
                 cache_dir: str | Path | None = None, compile_mode: str | None = None, exact_casts: bool = True,
                 fullgraph: bool = False, compile_backend: str = "inductor") -> None:
        if attention not in ATTENTION_BACKENDS:
            raise ValueError(f"attention must be one of {ATTENTION_BACKENDS}, got {attention!r}")
        if fp8_backend not in FP8_BACKENDS:
            raise ValueError(f"fp8_backend must be one of {FP8_BACKENDS}, got {fp8_backend!r}")
        if fp8_policy not in FP8_POLICIES:
            raise ValueError(f"fp8_policy must be one of {FP8_POLICIES}, got {fp8_policy!r}")
        if cache is not None and cache not in METHODS:
            raise ValueError(f"cache must be one of {METHODS} or None, got {cache!r}")
        self.attention = attention
        self.compile = compile
        self.fp8 = fp8
        self.fp8_backend = fp8_backend
        self.fp8_policy = fp8_policy
        self.fp8_attention = fp8_attention
        self.cache = cache
        self.max_sessions = max_sessions
        self.session_ttl_s = session_ttl_s
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.compile_mode = compile_mode
        self.exact_casts = exact_casts
        self.fullgraph = fullgraph
        self.compile_backend = compile_backend
        if self.cache_dir is not None:
            # Inductor reads the variable whenever it needs the directory, so setting it before the first compile
            # is enough. Overridden, not defaulted: importing torch's compiler already fills it with the /tmp default.
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.cache_dir / "inductor")

    def compile_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.compile_mode is not None:
            from torch._inductor import list_mode_options

            options |= list_mode_options(self.compile_mode)
        import torch._inductor.config as inductor_config

        if hasattr(inductor_config, "emulate_precision_casts"):  # torch >= 2.5
            options["emulate_precision_casts"] = self.exact_casts
        return options

    def apply(self, net: CosmosDiT) -> FastCosmosDiT:
        """Install the settings on `net`'s model (in place: attention processors, FP8 layers) and return the
        wrapper. The stage calls this once at load, then `warm_up`."""
        if isinstance(net, FastCosmosDiT):
            net = net.reference
        model: Any = net.model
        backend = resolve_attention(self.attention, net.device, net.dtype)
        fp8_layers: list[str] = []
        if self.fp8:
            fp8_layers = apply_fp8(model, self.fp8_backend, self.fp8_policy)
        set_attention(model, backend, fp8_self_attention=self.fp8_attention)
        blocks: list[Callable] = list(model.transformer_blocks)
        if self.compile:
            self.load_compile_cache()
            options = self.compile_options() if self.compile_backend == "inductor" else None
            blocks = [torch.compile(block, backend=self.compile_backend, dynamic=False, fullgraph=self.fullgraph,
                                    options=options) for block in model.transformer_blocks]
        cache = (None if self.cache is None else
                 StepCache(self.cache, max_sessions=self.max_sessions, ttl_s=self.session_ttl_s))
        settings = dict(attention=backend, compile=self.compile, fp8=self.fp8,
                        fp8_backend=self.fp8_backend if self.fp8 else None,
                        fp8_policy=self.fp8_policy if self.fp8 else None, fp8_layers=len(fp8_layers),
                        fp8_attention=self.fp8_attention, cache=self.cache, exact_casts=self.exact_casts,
                        compile_mode=self.compile_mode)
        log.info("DiT speed settings: %s", settings)
        return FastCosmosDiT(net, blocks, cache, settings)

    @torch.no_grad()
    def warm_up(self, net: FastCosmosDiT, latent_shapes: Sequence[Sequence[int]], fps: float = 24.0,
                context_tokens: int = 512) -> dict[str, Any]:
        """Compile (and autotune) for every latent shape (C, T, H, W) a request may bring, so no compile happens
        inside a request; afterwards an unwarmed shape runs eager. Two forwards per shape: the first compiles,
        the second must not. Returns the timings; writes the mega-cache when `cache_dir` is set."""
        if not isinstance(net, FastCosmosDiT):
            raise TypeError("warm_up takes the object returned by apply()")
        import torch._dynamo

        shapes = [tuple(int(s) for s in shape[-4:]) for shape in latent_shapes]
        limit = max(WARM_RECOMPILE_LIMIT, len(shapes) + 4)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
        arch, device, dtype = net.arch, net.device, net.dtype
        gen = torch.Generator(device=device).manual_seed(0)
        report: dict[str, Any] = {"shapes": [], "first_call_s": [], "second_call_s": []}
        for c, t, h, w in shapes:
            x = torch.randn(1, c, t, h, w, generator=gen, device=device, dtype=dtype)
            context = torch.randn(1, context_tokens, arch.crossattn_emb_channels, generator=gen, device=device,
                                  dtype=dtype)
            c_noise = torch.full((1,), 0.25 * math.log(80.0), device=device, dtype=dtype)
            mask = (torch.zeros(1, 1, t, h, w, device=device, dtype=dtype)
                    if arch.model_type == "Video2World" else None)
            times = []
            for _ in range(2):
                _sync(device)
                start = time.perf_counter()
                net(x, c_noise, context, fps, mask)
                _sync(device)
                times.append(time.perf_counter() - start)
            net.warm_shapes.add((1, c, t, h, w))
            report["shapes"].append([c, t, h, w])
            report["first_call_s"].append(round(times[0], 3))
            report["second_call_s"].append(round(times[1], 3))
        if self.compile:
            saved = self.save_compile_cache()
            report["mega_cache"] = None if saved is None else str(saved)
        return report

    # --- persistent compile caches ----------------------------------------------------------------------------
    def load_compile_cache(self) -> bool:
        """Hot-load the mega-cache written by an earlier warm-up (torch.compiler.load_cache_artifacts): it fills
        Inductor's on-disk caches so the next compile skips code generation. False when there is none."""
        if self.cache_dir is None or not (self.cache_dir / MEGA_CACHE_FILE).is_file():
            return False
        try:
            info = torch.compiler.load_cache_artifacts((self.cache_dir / MEGA_CACHE_FILE).read_bytes())
        except Exception as exc:  # a cache from another torch build is only a missed speedup
            log.warning("compile cache %s not loaded: %s", self.cache_dir / MEGA_CACHE_FILE, exc)
            return False
        return info is not None

    def save_compile_cache(self) -> Path | None:
        """Write every artifact compiled so far in this process (torch.compiler.save_cache_artifacts)."""
        if self.cache_dir is None:
            return None
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is None:
            return None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.cache_dir / MEGA_CACHE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(artifacts[0])
        tmp.replace(path)
        return path


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
