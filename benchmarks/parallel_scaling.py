"""Multi-GPU scaling of one guided DiT evaluation (issue #13): 1 GPU vs context-parallel vs CFG-parallel.

    torchrun --standalone --nproc_per_node 2 benchmarks/parallel_scaling.py --out "$OUT"   # 2 H200s, 7B shape
    torchrun --standalone --nproc_per_node 4 benchmarks/parallel_scaling.py --out "$OUT"   # 4 (8 likewise)
    torchrun --standalone --nproc_per_node 2 benchmarks/parallel_scaling.py --tiny --out /tmp/x   # CPU, gloo

The DiT has the 7B architecture (--model) with random weights, the latent of 121x704x1280 (16x16x88x160: 56,320
tokens), bf16, attention "auto" (FA3 on Hopper when installed). Every rank holds all weights. Rows, each one
guided evaluation (cond + uncond forward, CFG 7) timed after --warm untimed ones, the slowest rank's time:

  single            every rank alone, `guided_x0` (the 1-GPU baseline and the reference x0)
  context<P>        both branches in turn, each forward split over all P ranks (Ulysses all-to-all)
  cfg2xcontext<C>   the two branches at once on two halves of the ranks (CFG-parallel), each half splitting its
                    forward over C = P / 2 ranks (C = 1: plain CFG-parallel on 2 GPUs)

NVLink multicast stays off (NO_MULTICAST, unless the environment sets those variables). Per row: seconds,
speedup over `single`, peak memory (max over ranks) and the deviation of x0 from `single`
(max |diff|, rel L2; 0 expected for CFG-parallel, bf16 kernel noise for context-parallel). Rank 0 prints the
table and writes <out>/parallel_scaling_<P>gpu.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package, not an installed one

from benchmarks.dit_modes import deviation, env_report, init_random_weights, reset_dynamo
from cosmos_triton.diffusion.guidance import guided_x0
from cosmos_triton.models.checkpoints import DIT_PRESETS, latent_shape
from cosmos_triton.models.dit import CosmosDiT, build_model
from cosmos_triton.models.dit_speed import DiTSpeed, FastCosmosDiT
from cosmos_triton.parallel.cfg import cfg_parallel_x0, parallel_groups
from cosmos_triton.parallel.context import make_context_parallel

# --tiny: 8 heads so that 2, 4 and 8 ranks each get at least one
TINY = replace(DIT_PRESETS["Cosmos-1.0-Diffusion-7B-Text2World"], model_channels=256, num_blocks=2, num_heads=8,
               adaln_lora_dim=16)
GIB = 2**30
X0 = Callable[[], torch.Tensor]
# NVLink multicast off: no collective here needs it, and on shared hosts it can take the GPUs out of service
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "outputs"))
    p.add_argument("--tiny", action="store_true", help="2-block width-256 DiT at 17x64x96, on the CPU over gloo")
    p.add_argument("--model", default="Cosmos-1.0-Diffusion-7B-Text2World", choices=sorted(DIT_PRESETS))
    p.add_argument("--frames", type=int, default=121)
    p.add_argument("--height", type=int, default=704)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--attention", default="auto")
    p.add_argument("--compile", choices=["on", "off"], default="off",
                   help="regional compile of the blocks (warmed by the untimed calls)")
    p.add_argument("--warm", type=int, default=1, help="untimed guided evaluations per row")
    p.add_argument("--iters", type=int, default=2, help="timed guided evaluations per row")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.tiny:
        args.frames, args.height, args.width = 17, 64, 96
    return args


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cuda = torch.cuda.is_available() and not args.tiny
        for key, value in NO_MULTICAST.items():
            os.environ.setdefault(key, value)
        if "RANK" not in os.environ:  # not under torchrun: one process
            os.environ |= {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29513"}
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(f"cuda:{local}" if self.cuda else "cpu")
        if self.cuda:
            torch.cuda.set_device(self.device)
        dist.init_process_group("nccl" if self.cuda else "gloo", timeout=timedelta(minutes=10))
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.arch = TINY if args.tiny else DIT_PRESETS[args.model]
        self.latent = latent_shape(args.frames, args.height, args.width)
        self.rows: list[dict[str, Any]] = []
        self.reference: torch.Tensor | None = None
        self.single_s: float | None = None

    # --- model and inputs ---------------------------------------------------------------------------------------
    def build(self) -> CosmosDiT:
        model: Any = build_model(self.arch, None, device=self.device)
        init_random_weights(model, self.args.seed)  # seeded: the same weights on every rank
        return CosmosDiT(model, self.arch)

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.args.seed + 1)  # on the CPU: the same on every rank
        x = torch.randn(1, *self.latent, generator=gen) * 2.0
        cond = 0.2 * torch.randn(1, 512, self.arch.crossattn_emb_channels, generator=gen)
        cond = cond.to(self.device, torch.bfloat16)
        return x.to(self.device), torch.tensor([2.0], device=self.device), cond, torch.zeros_like(cond)

    def speed(self) -> DiTSpeed:
        return DiTSpeed(attention=self.args.attention, compile=self.args.compile == "on", cache=None)

    # --- measurement --------------------------------------------------------------------------------------------
    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def measure(self, name: str, ranks: int, x0: X0) -> None:
        """Warm calls, then the timed ones; the slowest rank's mean time and the largest peak over ranks."""
        for _ in range(self.args.warm):
            x0()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.sync()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(self.args.iters):
            out = x0()
        self.sync()
        stats = torch.tensor([(time.perf_counter() - t0) / self.args.iters,
                              torch.cuda.max_memory_allocated(self.device) / GIB if self.cuda else 0.0],
                             dtype=torch.float64, device=self.device)
        dist.all_reduce(stats, op=dist.ReduceOp.MAX)
        seconds, peak = stats.tolist()
        if self.reference is None:
            self.reference, self.single_s = out, seconds
        dev = deviation(out, self.reference)
        worst = torch.tensor([dev["max_abs"], dev["rel_l2"]], dtype=torch.float64, device=self.device)
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)  # every rank holds the whole x0: the worst of them
        assert self.single_s is not None
        self.rows.append({"name": name, "gpus": ranks, "guided_s": round(seconds, 4),
                          "speedup": round(self.single_s / seconds, 3), "peak_gib": round(peak, 2) if self.cuda
                          else None, "max_abs": worst[0].item(), "rel_l2": worst[1].item()})
        if self.args.compile == "on":
            reset_dynamo()  # the next row compiles its own blocks

    def run(self) -> None:
        net = self.build()
        x, sigma, cond, uncond = self.inputs()

        def guided(fast: FastCosmosDiT) -> X0:
            return lambda: guided_x0(fast, x, sigma, cond, uncond, 7.0, 24.0)

        self.measure("single", 1, guided(self.speed().apply(net)))
        if self.world == 1:
            return
        self.measure(f"context{self.world}", self.world, guided(make_context_parallel(self.speed().apply(net))))
        context = self.world // 2
        cfg_group, context_group = parallel_groups(context)
        fast = self.speed().apply(net)
        if context_group is not None:
            fast = make_context_parallel(fast, context_group)

        self.measure(f"cfg2xcontext{context}", self.world,
                     lambda: cfg_parallel_x0(fast, x, sigma, cond, uncond, 7.0, 24.0, group=cfg_group))

    def report(self) -> None:
        if self.rank != 0:
            return
        import json

        config = {"model": "tiny" if self.args.tiny else self.args.model, "latent": list(self.latent),
                  "tokens": self.latent[1] * self.latent[2] * self.latent[3] // 4, "world": self.world,
                  "attention": self.args.attention, "compile": self.args.compile, "iters": self.args.iters,
                  "backend": dist.get_backend()}
        result = {"config": config, "env": env_report(self.device), "rows": self.rows}
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"parallel_scaling_{self.world}gpu.json"
        path.write_text(json.dumps(result, indent=1))
        print(f"{'row':<18} {'gpus':>4} {'guided s':>9} {'speedup':>8} {'peak GiB':>9} {'max|dev|':>9} {'rel L2':>9}")
        for r in self.rows:
            peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
            print(f"{r['name']:<18} {r['gpus']:>4} {r['guided_s']:>9.3f} {r['speedup']:>8.3f} {peak:>9} "
                  f"{r['max_abs']:>9.3g} {r['rel_l2']:>9.3g}")
        print(f"wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    bench = Bench(parse_args(argv))
    try:
        with torch.no_grad():
            bench.run()
        bench.report()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
