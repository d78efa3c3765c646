"""The two guardrail runners of the original: text = [Blocklist, Aegis], first failure wins; video = content-safety
check on every frame, then face pixelation only if the video passed. See docs/FORMATS.md, Guardrail runners."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cosmos_triton.errors import GuardrailBlocked
from cosmos_triton.guardrail.common import AEGIS_DIR, BLOCKLIST_DIR, FACE_BLUR_DIR, VIDEO_SAFETY_DIR


class TextGuardrail:
    def __init__(self, guardrail_dir: Path | str, device: str = "cpu"):
        from cosmos_triton.guardrail.aegis import Aegis
        from cosmos_triton.guardrail.blocklist import Blocklist

        root = Path(guardrail_dir)
        self.checks: list[Blocklist | Aegis] = [Blocklist(root / BLOCKLIST_DIR), Aegis(root / AEGIS_DIR, device)]

    def __call__(self, prompt: str) -> str:
        """The prompt unchanged when every check passes; GuardrailBlocked at the first that does not."""
        for check in self.checks:
            result = check.check(prompt)
            if not result.safe:
                raise GuardrailBlocked(result.guardrail, result.message)
        return prompt


class VideoGuardrail:
    def __init__(self, guardrail_dir: Path | str, device: str = "cpu"):
        from cosmos_triton.guardrail.face_blur import RetinaFaceFilter
        from cosmos_triton.guardrail.video_safety import VideoContentSafetyFilter

        root = Path(guardrail_dir)
        self.safety = VideoContentSafetyFilter(root / VIDEO_SAFETY_DIR, device)
        self.face_blur = RetinaFaceFilter(root / FACE_BLUR_DIR, device)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [T, H, W, 3] -> the same with faces pixelated; GuardrailBlocked if any frame is unsafe."""
        result = self.safety.check(frames)
        if not result.safe:
            raise GuardrailBlocked(result.guardrail, result.message)
        return self.face_blur.apply(frames)
