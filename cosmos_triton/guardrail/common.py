"""What every guardrail returns, and the folder layout of Cosmos-1.0-Guardrail (docs/FORMATS.md, Guardrail folder)."""

from __future__ import annotations

from dataclasses import dataclass

GUARDRAIL_DIR = "Cosmos-1.0-Guardrail"
BLOCKLIST_DIR = "blocklist"
AEGIS_DIR = "aegis"  # a Hugging Face hub cache: models--{org}--{name}/snapshots/<sha>/...
FACE_BLUR_DIR = "face_blur_filter"
VIDEO_SAFETY_DIR = "video_content_safety_filter"

LLAMAGUARD_REPO = "meta-llama/LlamaGuard-7b"
AEGIS_ADAPTER_REPO = "nvidia/Aegis-AI-Content-Safety-LlamaGuard-Defensive-1.0"
SIGLIP_REPO = "google/siglip-so400m-patch14-384"


@dataclass(frozen=True)
class GuardrailResult:
    safe: bool
    guardrail: str  # e.g. "Blocklist", "Aegis", "VideoContentSafetyFilter"
    message: str = ""  # why it blocked, for the user

    def __str__(self) -> str:
        return f"{self.guardrail}: {'safe' if self.safe else 'blocked'}{': ' + self.message if self.message else ''}"


def hub_snapshot(cache_dir, repo_id: str):
    """The one snapshot folder of `repo_id` inside a hub cache (`models--org--name/snapshots/<sha>/`), without any
    network access; a clear error when it is missing or ambiguous."""
    from pathlib import Path

    root = Path(cache_dir) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    snapshots = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    ref = root.parent / "refs" / "main"
    if ref.is_file() and (root / ref.read_text().strip()).is_dir():
        return root / ref.read_text().strip()
    if len(snapshots) == 1:
        return snapshots[0]
    raise FileNotFoundError(f"{repo_id}: expected one snapshot under {root}, found {[p.name for p in snapshots]}")
