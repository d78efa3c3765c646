"""Step caching for the DiT (issue #11 "cache" mode): reuse the residual of the transformer blocks from an earlier
denoising step when the input to them has barely changed.

Two signals decide, both evaluated per (session, branch) so the conditional and unconditional passes of one
request, and interleaved requests, never share a cache:

- ``teacache`` (default): TeaCache (arXiv 2411.19108) as TeaCache4Cosmos applies it to Cosmos-1.0 (public
  ali-vilab/TeaCache@7c10efc `TeaCache4Cosmos/teacache_sample_video_t2v.py`): the relative L1 change of block 0's
  AdaLN-modulated input (before the per-block position embedding), rescaled by a polynomial calibrated on
  Cosmos-1.0-Diffusion-7B, is accumulated across calls; while the sum stays below the threshold all blocks are
  skipped and the cached residual (blocks' output - input) is added instead. The first call of a session and the
  final clean-x0 call are always computed. Published: threshold 0.3 -> 1.4x, 0.4 -> 2.0x (T2W and V2W, H800).
- ``fbcache``: First-Block-Cache (ParaAttention; cache-dit's DBCache with F1B0): block 0 always runs; if the
  relative L1 change of its residual against the one of the last computed call is below the threshold, blocks
  1..N-1 are skipped and their cached residual is added. No calibration, so it transfers to 14B as is.

A threshold <= 0 switches caching off for that call: the caller then runs the plain path, bit-identical to no
cache. Memory is bounded: at most `max_sessions` sessions are kept (least recently used evicted), sessions idle for
more than `ttl_s` are dropped, and `end_session` (or a call marked final) frees a finished one. Per (session,
branch) two tensors of the token stream are kept: 2 x 0.46 GB for the 7B at 704x1280, so ~1.8 GB per session.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

METHODS = ("teacache", "fbcache")
BRANCHES = ("cond", "uncond")
# TeaCache4Cosmos' rescaling polynomial (highest power first), fitted on Cosmos-1.0-Diffusion-7B; the same
# coefficients are used by its Video2World script.
TEACACHE_COSMOS_COEFFICIENTS = (2.71156237e02, -9.19775607e01, 2.24437250e00, 2.08355751e00, 1.41776330e-01)


def relative_l1(new: torch.Tensor, old: torch.Tensor) -> float:
    """mean|new - old| / mean|old|, reduced in fp32 (one host sync)."""
    num = torch.linalg.vector_norm(new - old, ord=1, dtype=torch.float32)
    den = torch.linalg.vector_norm(old, ord=1, dtype=torch.float32)
    return float(num / den.clamp_min(torch.finfo(torch.float32).tiny))


@dataclass
class BranchState:
    """What one branch of one session keeps between its calls."""

    shape: tuple[int, ...]
    c_noise: float  # of the last call: a larger one means a new sampling run reused the session id
    signal: torch.Tensor | None = None  # teacache: last modulated input; fbcache: first-block residual
    residual: torch.Tensor | None = None  # blocks' output - input of the last computed call
    accumulated: float = 0.0  # teacache's rescaled distance since the last computed call
    evaluations: int = 0
    skipped: int = 0


@dataclass
class Session:
    branches: dict[str, BranchState] = field(default_factory=dict)
    last_used: float = 0.0

    def stats(self) -> dict[str, dict[str, int]]:
        per = {name: {"evaluations": b.evaluations, "skipped": b.skipped} for name, b in self.branches.items()}
        per["total"] = {"evaluations": sum(b.evaluations for b in self.branches.values()),
                        "skipped": sum(b.skipped for b in self.branches.values())}
        return per


class StepCache:
    """Per-(session, branch) step-cache state with the decision rule of `method`; see the module docstring.

    Not thread-safe: one DiT step runs at a time per model instance (Triton's Python backend serialises
    `execute` per instance)."""

    def __init__(self, method: str = "teacache", max_sessions: int = 4, ttl_s: float = 900.0,
                 coefficients: Sequence[float] = TEACACHE_COSMOS_COEFFICIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if method not in METHODS:
            raise ValueError(f"cache method must be one of {METHODS}, got {method!r}")
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        self.method = method
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self.rescale = np.poly1d(list(coefficients))
        self.clock = clock
        self._sessions: OrderedDict[Hashable, Session] = OrderedDict()
        self.evaluations = 0  # process totals, for metrics
        self.skipped = 0
        self.evicted = 0

    # --- sessions -----------------------------------------------------------------------------------------
    @property
    def sessions(self) -> tuple[Hashable, ...]:
        return tuple(self._sessions)

    def stats(self, session: Hashable) -> dict[str, dict[str, int]] | None:
        s = self._sessions.get(session)
        return None if s is None else s.stats()

    def end_session(self, session: Hashable) -> dict[str, dict[str, int]] | None:
        """Forget a finished session; returns its counters."""
        s = self._sessions.pop(session, None)
        return None if s is None else s.stats()

    def clear(self) -> None:
        self._sessions.clear()

    def _session(self, session: Hashable) -> Session:
        now = self.clock()
        for key in [k for k, s in self._sessions.items() if now - s.last_used > self.ttl_s and k != session]:
            del self._sessions[key]
            self.evicted += 1
        s = self._sessions.get(session)
        if s is None:
            s = self._sessions[session] = Session()
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
                self.evicted += 1
        self._sessions.move_to_end(session)
        s.last_used = now
        return s

    def branch(self, session: Hashable, branch: str, shape: tuple[int, ...], c_noise: float) -> BranchState:
        """The state of this branch, new when absent, when the token shape changed, or when the noise level went
        up (a new sampling run under a reused id): stale state is never applied."""
        s = self._session(session)
        b = s.branches.get(branch)
        if b is None or b.shape != shape or c_noise > b.c_noise:
            b = s.branches[branch] = BranchState(shape=shape, c_noise=c_noise)
        b.c_noise = c_noise
        return b

    # --- decisions ----------------------------------------------------------------------------------------
    def distance(self, new: torch.Tensor, old: torch.Tensor) -> float:
        """The change signal both rules threshold: `relative_l1`. A context-parallel DiT holds one shard of the
        tokens per rank and overrides this to reduce the two L1 sums over its group, so every rank takes the same
        decision (cosmos_triton/parallel/context.py)."""
        return relative_l1(new, old)

    def teacache_skip(self, state: BranchState, modulated: torch.Tensor, threshold: float, final: bool) -> bool:
        """TeaCache: accumulate the rescaled change of the modulated input; skip while below the threshold."""
        state.evaluations += 1
        self.evaluations += 1
        previous, state.signal = state.signal, modulated
        if previous is None or state.residual is None or final:
            state.accumulated = 0.0
            return False
        state.accumulated += float(self.rescale(self.distance(modulated, previous)))
        if state.accumulated < threshold:
            state.skipped += 1
            self.skipped += 1
            return True
        state.accumulated = 0.0
        return False

    def fbcache_skip(self, state: BranchState, first_residual: torch.Tensor, threshold: float, final: bool) -> bool:
        """First-Block-Cache: skip blocks 1..N-1 while block 0's residual stays within the threshold of the one
        of the last computed call (the reference moves only when computing, so drift is bounded)."""
        state.evaluations += 1
        self.evaluations += 1
        if (state.signal is not None and state.residual is not None and not final
                and self.distance(first_residual, state.signal) < threshold):
            state.skipped += 1
            self.skipped += 1
            return True
        state.signal = first_residual
        return False
