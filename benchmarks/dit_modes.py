"""DiT speed modes (issue #11) on one GPU: time per forward, deviation from our eager exact path, peak memory.

    python benchmarks/dit_modes.py --out "$OUT"            # H200: 7B architecture, random weights, 121x704x1280
    python benchmarks/dit_modes.py --tiny --out /tmp/x     # CPU check of the script itself (a unit test runs it)

Rows, in order, each written to <out>/dit_modes.json as soon as it is measured (a timeout keeps what was done):
  exact_eager         our CosmosDiT (diffusers' CosmosTransformer3DModel with the original's numerics), eager,
                      SDPA as torch picks it (cuDNN on sm90): the reference every deviation is measured against
  alternative         diffusers' CosmosTransformer3DModel as shipped (its fp32 RoPE table, twice-rounded RMSNorm,
                      QK eps 1e-5, fp32 learnable position embedding), same weights and inputs
  exact_compile       DiTSpeed(attention="sdpa", compile=True): regional compile, warmed at load
  exact_fa3           FlashAttention-3 (fa3_fwd wheel) for every attention, eager      [if the wheel imports]
  exact_fa3_compile   the same, compiled                                               [if the wheel imports]
  cache_*             a short sampling run (--cache-steps RES steps + the final x0, CFG 7) on the fastest exact
                      compiled variant without cache and with TeaCache at each --cache-thresholds; skipped branch
                      evaluations, run time, deviation of the final latent and of one step's x0 from the uncached run
  fp8_compile         FP8 row-wise GEMMs (our torch._scaled_mm layer, policy qk_bf16) + fastest exact attention
  fp8_attn_compile    + FA3's FP8 self-attention (K-smoothed, per-head scales)         [if the wheel imports]
  fp8_torchao         torchao Float8DynamicActivationFloat8WeightConfig(PerRow) on the same layers, compiled when
                      the time left allows --compile-cap-s, else eager (said in the row)  [if torchao imports]
Rows that do not fit the remaining --budget-s are skipped and listed with the reason. Deviations are on one
forward (the network output F) with random weights: they bound kernel/compile noise, not the quality of the lossy
modes, which needs real weights.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package, not an installed one

from cosmos_triton.diffusion.guidance import guided_x0
from cosmos_triton.diffusion.sampler import SIGMA_MAX, initial_noise, sample
from cosmos_triton.models.checkpoints import DIT_PRESETS, latent_shape
from cosmos_triton.models.dit import CosmosDiT, build_model, diffusers_config
from cosmos_triton.models.dit_fp8 import apply_fp8, fp8_linear_names
from cosmos_triton.models.dit_speed import DiTSpeed, FastCosmosDiT, fa3_function
from cosmos_triton.models.step_cache import StepCache

TINY = replace(DIT_PRESETS["Cosmos-1.0-Diffusion-7B-Text2World"], model_channels=64, num_blocks=2, num_heads=2,
               adaln_lora_dim=16)
GIB = 2**30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "outputs"), help="folder for dit_modes.json")
    p.add_argument("--tiny", action="store_true", help="2-block width-64 DiT at 121x128x192 (CPU check)")
    p.add_argument("--model", default="Cosmos-1.0-Diffusion-7B-Text2World", choices=sorted(DIT_PRESETS))
    p.add_argument("--frames", type=int, default=121)
    p.add_argument("--height", type=int, default=704)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--iters", type=int, default=1, help="timed forwards per row after the warm one")
    p.add_argument("--cache-steps", type=int, default=3, help="RES steps of the cache rows' sampling run")
    p.add_argument("--cache-method", default="teacache", choices=["teacache", "fbcache"])
    p.add_argument("--cache-thresholds", type=float, nargs="+", default=[0.3, 0.4])
    p.add_argument("--budget-s", type=float, default=205.0, help="skip rows that would end after this")
    p.add_argument("--compile-cap-s", type=float, default=150.0, help="torchao compile only if this much is left")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--rows", default="all", help="comma-separated row names (prefixes) to run, or all")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.tiny:
        args.height, args.width = 128, 192
    return args


def env_report(device: torch.device) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    fa3 = fa3_function()
    report: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": version("diffusers"),
              "torchao": version("torchao") if importlib.util.find_spec("torchao") else None,
              "fa3_fwd": version("fa3_fwd"), "fa3_module": None if fa3 is None else fa3.__module__,
              "device": str(device), "python": sys.version.split()[0]}
    if device.type == "cuda":
        report |= {"gpu": torch.cuda.get_device_name(device), "capability": list(torch.cuda.get_device_capability()),
                   "cudnn": torch.backends.cudnn.version()}
    return report


@torch.no_grad()
def init_random_weights(model: torch.nn.Module, seed: int) -> None:
    """Seeded weights on the model's device, scaled as the small checkpoints are (fan-in for Linear layers)."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim == 1:
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32))
        elif "pos_emb" in name:
            p.copy_(0.02 * torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32))
        else:
            p.copy_(torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32) / math.sqrt(p.shape[1]))


def alternative_of(net: Any) -> CosmosDiT:
    """diffusers' model as shipped, sharing `net`'s weights: stock RoPE, RMSNorm, eps and fp32 position table."""
    from diffusers import CosmosTransformer3DModel

    stock: Any
    with torch.device("meta"):
        stock = CosmosTransformer3DModel(**diffusers_config(net.arch))
    stock.load_state_dict(net.model.state_dict(), strict=True, assign=True)
    stock.learnable_pos_embed.float()  # _keep_in_fp32_modules, as from_pretrained(torch_dtype=bf16) leaves it
    return CosmosDiT(stock.eval().requires_grad_(False), net.arch)


def deviation(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    d = out.double() - ref.double()
    return {"max_abs": float(d.abs().max()), "rel_l2": float(d.norm() / ref.double().norm())}


def dynamo_stats() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {"unique_graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "fxgraph_cache_hit": int(counters["inductor"]["fxgraph_cache_hit"])}


def reset_dynamo() -> None:
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.start = time.perf_counter()
        self.out_dir = Path(args.out)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "dit_modes.json"
        if args.device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(args.device)
        self.arch = TINY if args.tiny else DIT_PRESETS[args.model]
        c, t, h, w = latent_shape(args.frames, args.height, args.width)
        self.latent = (c, t, h, w)
        pt, ph, pw = self.arch.patch_size
        self.result: dict[str, Any] = {
            "env": env_report(self.device),
            "config": {"model": "tiny" if args.tiny else args.model, "frames": args.frames, "height": args.height,
                       "width": args.width, "latent": list(self.latent),
                       "tokens": (t // pt) * (h // ph) * (w // pw), "iters": args.iters,
                       "cache_steps": args.cache_steps, "cache_method": args.cache_method,
                       "cache_thresholds": args.cache_thresholds, "budget_s": args.budget_s,
                       "compile_backend": args.compile_backend, "weights": "random (seeded, fan-in scaled)"},
            "rows": [], "cache": [], "skipped": [],
        }
        self.forward_s: float | None = None  # the eager exact forward, for estimates
        self.compile_dir: Path | None = None
        self.write()

    # --- bookkeeping --------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def wanted(self, name: str) -> bool:
        rows = self.args.rows
        return rows == "all" or any(name.startswith(r.strip()) for r in rows.split(","))

    def fits(self, name: str, estimate_s: float) -> bool:
        if not self.wanted(name):
            return False
        left = self.args.budget_s - self.elapsed()
        if estimate_s > left:
            self.skip(name, f"estimated {estimate_s:.0f} s, {left:.0f} s of the budget left")
            return False
        return True

    def skip(self, name: str, reason: str) -> None:
        self.result["skipped"].append({"name": name, "reason": reason})
        print(f"[{self.elapsed():6.1f}s] skip {name}: {reason}", flush=True)
        self.write()

    def write(self) -> None:
        self.result["elapsed_s"] = round(self.elapsed(), 1)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1))
        tmp.replace(self.path)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> float:
        if self.device.type != "cuda":
            return 0.0
        self.sync()
        torch.cuda.reset_peak_memory_stats(self.device)
        return torch.cuda.memory_allocated(self.device) / GIB

    def peak(self) -> float | None:
        return None if self.device.type != "cuda" else round(torch.cuda.max_memory_allocated(self.device) / GIB, 2)

    def peak_above(self, start_gib: float) -> float | None:
        peak = self.peak()
        return None if peak is None else round(peak - start_gib, 2)

    # --- model and inputs ---------------------------------------------------------------------------------------
    def build(self) -> CosmosDiT:
        t0 = time.perf_counter()
        model: Any = build_model(self.arch, None, device=self.device)
        init_random_weights(model, self.args.seed)
        self.sync()
        self.result["config"]["build_s"] = round(time.perf_counter() - t0, 1)
        self.result["config"]["weights_gib"] = round(sum(p.numel() * p.element_size()
                                                          for p in model.parameters()) / GIB, 2)
        return CosmosDiT(model, self.arch)

    def inputs(self) -> tuple:
        gen = torch.Generator(device=self.device).manual_seed(self.args.seed + 1)
        dt = torch.bfloat16
        x = torch.randn(1, *self.latent, generator=gen, device=self.device, dtype=dt)
        context = 0.2 * torch.randn(1, 512, self.arch.crossattn_emb_channels, generator=gen, device=self.device,
                                    dtype=dt)
        c_noise = torch.full((1,), 0.25 * math.log(2.0), device=self.device, dtype=dt)
        return x, c_noise, context, 24.0

    # --- measurements -------------------------------------------------------------------------------------------
    def time_forward(self, net: Callable, args: tuple, iters: int, warm: bool = False
                     ) -> tuple[float | None, float, torch.Tensor]:
        """A first call (skipped when `warm`: the warm-up made it), then `iters` timed calls."""
        first = None
        if not warm:
            self.sync()
            t0 = time.perf_counter()
            net(*args)
            self.sync()
            first = time.perf_counter() - t0
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            out = net(*args)
            self.sync()
            times.append(time.perf_counter() - t0)
        return first, sum(times) / len(times), out

    def forward_row(self, name: str, mode: str, net: Callable, args: tuple, ref: torch.Tensor | None,
                    warm: Callable[[], dict] | None = None, note: str = "") -> torch.Tensor | None:
        """Time one configuration: optional warm-up (compile at load), then a first and `iters` timed calls."""
        start_mem = self.reset_peak()
        row: dict[str, Any] = {"name": name, "mode": mode}
        try:
            if warm is not None:
                t0 = time.perf_counter()
                row["warm_up"] = warm()
                row["warm_up_s"] = round(time.perf_counter() - t0, 2)
                row["dynamo"] = dynamo_stats()
            first, mean, out = self.time_forward(net, args, self.args.iters, warm=warm is not None)
        except Exception as exc:  # one failing variant must not cost the others
            row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            traceback.print_exc()
            self.result["rows"].append(row)
            self.write()
            return None
        row |= {"forward_s": round(mean, 4), "first_call_s": None if first is None else round(first, 4),
                "iters": self.args.iters,
                "peak_gib": self.peak(), "peak_above_start_gib": self.peak_above(start_mem)}
        if isinstance(net, FastCosmosDiT):
            row["settings"] = net.settings
        if warm is not None:
            row["compile_s"] = round(max(0.0, row["warm_up"]["first_call_s"][0] - mean), 2)
            row["dynamo"] = dynamo_stats()
        row |= deviation(out, ref) if ref is not None else {"max_abs": 0.0, "rel_l2": 0.0}
        if note:
            row["note"] = note
        self.result["rows"].append(row)
        self.write()
        print(f"[{self.elapsed():6.1f}s] {name:20s} {mean:8.3f} s/forward  rel_l2 {row['rel_l2']:.3e}  "
              f"max_abs {row['max_abs']:.3e}  peak {row['peak_gib']} GiB", flush=True)
        return out

    def speed(self, **kw: Any) -> DiTSpeed:
        kw.setdefault("cache", None)
        return DiTSpeed(compile_backend=self.args.compile_backend, cache_dir=self.compile_dir, **kw)

    def compiled(self, name: str, mode: str, net: CosmosDiT, args: tuple, ref: torch.Tensor, **kw: Any
                 ) -> FastCosmosDiT | None:
        reset_dynamo()
        speed = self.speed(compile=True, **kw)
        fast = speed.apply(net)
        out = self.forward_row(name, mode, fast, args, ref,
                               warm=lambda: speed.warm_up(fast, [self.latent], fps=24.0))
        return None if out is None else fast

    # --- the run --------------------------------------------------------------------------------------------------
    def run(self) -> None:
        args = self.args
        torch.set_grad_enabled(False)
        self.compile_dir = Path(tempfile.mkdtemp(prefix="dit-modes-compile-"))
        self.result["config"]["compile_cache_dir"] = str(self.compile_dir) + " (fresh: compile times are cold)"
        net = self.build()
        inp = self.inputs()
        print(f"[{self.elapsed():6.1f}s] built {self.result['config']['model']} on {self.device}, "
              f"{self.result['config']['tokens']} tokens", flush=True)
        if self.device.type == "cuda":
            q = torch.zeros(1, self.arch.num_heads, 128, self.arch.head_dim, device=self.device, dtype=torch.bfloat16)
            try:  # 3 = cuDNN (torch's SDPBackend order)
                self.result["env"]["sdpa_choice"] = int(torch._fused_sdp_choice(q, q, q))
            except Exception as exc:
                self.result["env"]["sdpa_choice"] = repr(exc)[:200]
        ref = self.forward_row("exact_eager", "exact (reference)", net, inp, None)
        if ref is None:
            return
        self.forward_s = self.result["rows"][-1]["forward_s"]
        f = self.forward_s
        eager_cost = (1 + args.iters) * f + 2
        compile_cost = 25 + (2 + args.iters) * f
        if self.fits("alternative", eager_cost):
            self.forward_row("alternative", "diffusers as shipped", alternative_of(net), inp, ref)
        best: FastCosmosDiT | None = None
        if self.fits("exact_compile", compile_cost):
            best = self.compiled("exact_compile", "exact", net, inp, ref, attention="sdpa") or best
        fa3 = fa3_function() is not None and self.device.type == "cuda"
        if not fa3:
            self.skip("exact_fa3", "FlashAttention-3 not importable here (pip install fa3_fwd==0.0.3)")
        elif self.fits("exact_fa3", eager_cost):
            self.forward_row("exact_fa3", "exact", self.speed(attention="fa3", compile=False).apply(net), inp, ref)
        if fa3 and self.fits("exact_fa3_compile", compile_cost):
            best = self.compiled("exact_fa3_compile", "exact", net, inp, ref, attention="fa3") or best
        if best is not None:
            self.cache_rows(best)
        elif self.wanted("cache"):
            self.skip("cache", "no compiled exact variant to run it on")
        self.fp8_rows(net, inp, ref, fa3)

    def cache_rows(self, net: Any) -> None:
        """A short sampling run without cache, then with the step cache at each threshold, on `net`."""
        args = self.args
        evaluations = 2 * (args.cache_steps + 1)
        fwd = next(r["forward_s"] for r in reversed(self.result["rows"]) if r.get("forward_s"))
        gen = torch.Generator(device=self.device).manual_seed(args.seed + 2)
        cond = 0.2 * torch.randn(1, 512, self.arch.crossattn_emb_channels, generator=gen, device=self.device,
                                 dtype=torch.bfloat16)
        uncond = torch.zeros_like(cond)
        noise = initial_noise((1, *self.latent), args.seed).to(self.device) * SIGMA_MAX
        net.cache = StepCache(args.cache_method, max_sessions=2)
        baseline: dict[str, Any] | None = None
        for threshold in [0.0, *args.cache_thresholds]:
            name = "cache_off" if threshold == 0 else f"cache_{args.cache_method}_{threshold:g}"
            if not self.fits(name, evaluations * fwd * (1.0 if threshold == 0 else 0.8) + 2):
                continue
            x0s: list[torch.Tensor] = []
            skipped: list[int] = []
            calls = [0]

            def x0_fn(x: torch.Tensor, sigma: torch.Tensor, threshold: float = threshold, x0s: list = x0s,
                      skipped: list = skipped, calls: list = calls) -> torch.Tensor:
                final = calls[0] == args.cache_steps
                calls[0] += 1
                with net.step(f"bench-{threshold}", threshold, final=final) as report:
                    x0 = guided_x0(net, x, sigma, cond, uncond, 7.0, 24.0)
                x0s.append(x0)
                skipped.append(report.skipped)
                return x0

            start_mem = self.reset_peak()
            self.sync()
            t0 = time.perf_counter()
            final = sample(x0_fn, noise, args.cache_steps)
            self.sync()
            run_s = time.perf_counter() - t0
            row: dict[str, Any] = {"name": name, "method": None if threshold == 0 else args.cache_method,
                                   "threshold": threshold, "steps": args.cache_steps, "evaluations": evaluations,
                                   "skipped": sum(skipped), "skipped_per_step": skipped, "run_s": round(run_s, 2),
                                   "peak_gib": self.peak(), "peak_above_start_gib": self.peak_above(start_mem),
                                   "on": f"{net.settings.get('attention')}"
                                         f"{' compiled' if net.settings.get('compile') else ''}"}
            if baseline is None:
                baseline = {"final": final, "x0s": x0s, "run_s": run_s}
            else:
                at = next((i for i, s in enumerate(skipped) if s), len(skipped) - 1)
                row |= {"speedup": round(baseline["run_s"] / run_s, 3), "final": deviation(final, baseline["final"]),
                        "step_x0": {"step": at} | deviation(x0s[at], baseline["x0s"][at])}
            self.result["cache"].append(row)
            self.write()
            print(f"[{self.elapsed():6.1f}s] {name:20s} {run_s:8.2f} s/run  skipped {sum(skipped)}/{evaluations}  "
                  f"{row.get('final', '')}", flush=True)

    def fp8_rows(self, net: CosmosDiT, inp: tuple, ref: torch.Tensor, fa3: bool) -> None:
        args = self.args
        f = self.forward_s or 1.0
        cost = 30 + (2 + args.iters) * f
        hw = self.device.type == "cuda" and torch.cuda.get_device_capability(self.device) >= (8, 9)
        if not hw and not args.tiny:
            self.skip("fp8", "FP8 GEMMs need a CUDA device of compute capability >= 8.9")
            return
        attention = "fa3" if fa3 else "sdpa"
        model: Any = net.model
        names = fp8_linear_names(model, "qk_bf16")
        originals = {n: model.get_submodule(n) for n in names}  # to restore bf16 between the FP8 back ends
        if self.fits("fp8_compile", cost):
            apply_fp8(model, "scaled_mm", "qk_bf16", require_hardware=not args.tiny)
            self.compiled("fp8_compile", "fp8 (scaled_mm GEMMs)", net, inp, ref, attention=attention)
            if fa3 and self.fits("fp8_attn_compile", cost):
                self.compiled("fp8_attn_compile", "fp8 (GEMMs + FA3 FP8 attention)", net, inp, ref,
                              attention="fa3", fp8_attention=True)
            _restore(model, originals)
        if importlib.util.find_spec("torchao") is None:
            self.skip("fp8_torchao", "torchao not importable here (pip install --no-deps torchao==0.18.0)")
            return
        if not hw:
            self.skip("fp8_torchao", "torchao's FP8 needs compute capability >= 8.9")
            return
        if not self.fits("fp8_torchao", (2 + args.iters) * f + 5):
            return
        weights = {n: model.get_submodule(n).weight for n in names}
        try:
            apply_fp8(model, "torchao", "qk_bf16")
            left = args.budget_s - self.elapsed()
            if left > args.compile_cap_s + (2 + args.iters) * f:
                self.compiled("fp8_torchao", "fp8 (torchao PerRow, compiled)", net, inp, ref, attention=attention)
            else:
                reset_dynamo()
                self.forward_row("fp8_torchao", "fp8 (torchao PerRow, eager)",
                                 self.speed(attention=attention, compile=False).apply(net), inp, ref,
                                 note=f"compile not tried: {left:.0f} s left < cap {args.compile_cap_s:.0f} s + runs "
                                      "(its compile took 193 s before); eager FP8 has unfused quantization")
        finally:
            for n, w in weights.items():
                model.get_submodule(n).weight = w

    def table(self) -> str:
        lines = [f"{'row':22s} {'s/forward':>10s} {'compile s':>10s} {'rel L2':>10s} {'max abs':>10s} {'peak GiB':>9s}"]
        for r in self.result["rows"]:
            if "error" in r:
                lines.append(f"{r['name']:22s} ERROR {r['error'][:80]}")
                continue
            lines.append(f"{r['name']:22s} {r['forward_s']:10.3f} {r.get('compile_s', ''):>10} "
                         f"{r['rel_l2']:10.3e} {r['max_abs']:10.3e} {r['peak_gib']!s:>9}")
        for r in self.result["cache"]:
            dev = r.get("final", {})
            lines.append(f"{r['name']:22s} {r['run_s']:10.2f} run  skipped {r['skipped']}/{r['evaluations']}"
                         f"  final rel L2 {dev.get('rel_l2', 0):.3e}  speedup {r.get('speedup', 1.0)}")
        lines += [f"skipped {s['name']}: {s['reason']}" for s in self.result["skipped"]]
        return "\n".join(lines)


def _restore(model: torch.nn.Module, originals: dict[str, torch.nn.Module]) -> None:
    for name, module in originals.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, module)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.write()
        print(bench.table(), flush=True)
        print(f"wrote {bench.path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
