"""Video content safety filter: SigLIP image embeddings -> a small MLP classifier.
See docs/FORMATS.md, Video content safety.

Every frame of the generated video is classified (the in-pipeline frames path of the original; the 2 fps sampling
applies only to its file CLI). The first frame whose class is not 0 ("Safe") blocks the video and the check stops.
A frame that raises is logged and skipped, so a video whose every frame fails passes (fail-open, as the original).

By default frames go through SigLIP one at a time, as in the original. `batch_size > 1` is faster but not bit-identical:
the image processor treats each image alone, yet batched fp32 matmuls round differently (max |diff| of the raw
features: 1.2e-6 on CPU with the small model, 6.5e-4 at magnitude 3.3 on an H100 with the so400m shape), so a class
can flip only where two logits nearly tie. On the H100, 121 frames took 2.9 s at batch 1 and 2.2 s at batch 16.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cosmos_triton.guardrail.common import SIGLIP_REPO, GuardrailResult, hub_snapshot

log = logging.getLogger(__name__)

NAME = "VideoContentSafetyFilter"
CHECKPOINT_FILE = "safety_filter.pt"
CLASS_NAMES = ("Safe", "Sexual_Content", "Violence", "Drugs", "Child_Abuse", "Hate_and_Harassment", "Self-Harm")
SAFE_CLASS = 0
SIGLIP_FEATURE_DIM = 1152  # google/siglip-so400m-patch14-384
HIDDEN_SIZES = (512, 256)
DEFAULT_BATCH_SIZE = 1  # bit-identical to the original; see the module docstring


class SafetyClassifier(nn.Module):
    """Linear-BN-ReLU, Linear-BN-ReLU, Linear; raw logits. Named so that keys read `network.layers.<i>.*`."""

    def __init__(self, input_size: int, num_classes: int = len(CLASS_NAMES)):
        super().__init__()
        h1, h2 = HIDDEN_SIZES
        self.layers = nn.Sequential(
            nn.Linear(input_size, h1),
            nn.BatchNorm1d(h1),
            nn.ReLU(),
            nn.Linear(h1, h2),
            nn.BatchNorm1d(h2),
            nn.ReLU(),
            nn.Linear(h2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class VideoSafetyModel(nn.Module):
    """Only the `network.` prefix of the original's wrapper, so its checkpoint loads strictly."""

    def __init__(self, input_size: int, num_classes: int = len(CLASS_NAMES)):
        super().__init__()
        self.network = SafetyClassifier(input_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def load_classifier(path: Path, device: str = "cpu") -> VideoSafetyModel:
    """`safety_filter.pt` -> eval-mode fp32 model; the input size comes from the first weight (1152 for SigLIP
    so400m), the 7 classes are fixed as in the original, and the load is strict."""
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    first = state.get("network.layers.0.weight")
    # without that key, build the original's size and let the strict load name every missing/unexpected key
    model = VideoSafetyModel(input_size=first.shape[1] if first is not None else SIGLIP_FEATURE_DIM)
    model.load_state_dict(state)
    return model.to(device, dtype=torch.float32).eval()


@torch.inference_mode()
def classify_features(features: torch.Tensor, classifier: nn.Module) -> list[int]:
    """Raw SigLIP image features [N, D] -> class per row: L2-normalise, classify, argmax of the softmax."""
    features = features / features.norm(dim=-1, keepdim=True)
    probabilities = torch.softmax(classifier(features), dim=-1)
    return probabilities.argmax(dim=-1).tolist()


def _image_features(output) -> torch.Tensor:
    # transformers 5 returns the vision output (pooled embedding in pooler_output); 4.x returned the tensor itself
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class VideoContentSafetyFilter:
    """`check(frames)` -> GuardrailResult for a uint8 [T, H, W, 3] video. Loads offline from the cache folder."""

    def __init__(self, safety_dir: Path, device: str = "cpu", batch_size: int = DEFAULT_BATCH_SIZE):
        from transformers import SiglipImageProcessorPil, SiglipModel

        snapshot = hub_snapshot(safety_dir, SIGLIP_REPO)
        self.device = device
        self.batch_size = batch_size
        self.encoder = SiglipModel.from_pretrained(snapshot, dtype=torch.float32, local_files_only=True)
        self.encoder.to(device).eval()  # type: ignore[arg-type]
        # The original calls SiglipProcessor(images=...), which only runs its image processor. The PIL backend is
        # the one the original used (PIL bicubic resize, then rescale and normalise in numpy), and loading it alone
        # spares the SentencePiece text tokenizer, which nothing here uses.
        self.processor = SiglipImageProcessorPil.from_pretrained(snapshot, local_files_only=True)
        self.classifier = load_classifier(Path(safety_dir) / CHECKPOINT_FILE, device)

    @torch.inference_mode()
    def encode(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """Raw (not yet normalised) SigLIP image features [N, D] of uint8 [H, W, 3] frames."""
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]  # the original hands PIL images to the processor
        inputs = self.processor(images=images, return_tensors="pt").to(self.device, dtype=torch.float32)
        return _image_features(self.encoder.get_image_features(**inputs))

    def classify(self, frames: Sequence[np.ndarray]) -> list[int]:
        return classify_features(self.encode(frames), self.classifier)

    def _classify_batch(self, frames: np.ndarray, first: int) -> list[int | None]:
        """Classes of one batch; if the batch fails, frame by frame, with None for a frame that raises."""
        try:
            classes: list[int | None] = list(self.classify(list(frames)))
            return classes
        except Exception:
            if len(frames) > 1:
                return [self._classify_batch(frames[i : i + 1], first + i)[0] for i in range(len(frames))]
            log.warning("Failed to run the video safety classifier on frame %d", first, exc_info=True)
            return [None]

    def check(self, frames: np.ndarray) -> GuardrailResult:
        """The first unsafe frame blocks, as in the original. Unlike the original, which skips a frame the
        classifier fails on, such a frame also blocks (after the rest are checked): a frame nothing looked at has
        not passed the guardrail."""
        unchecked = None
        for start in range(0, len(frames), self.batch_size):
            classes = self._classify_batch(frames[start : start + self.batch_size], start)
            for index, cls in enumerate(classes, start):
                if cls is None:
                    unchecked = index if unchecked is None else unchecked
                elif cls != SAFE_CLASS:
                    name = CLASS_NAMES[cls] if 0 <= cls < len(CLASS_NAMES) else "Unknown"
                    return GuardrailResult(safe=False, guardrail=NAME, message=f"frame {index} classified as {name}")
        if unchecked is not None:
            return GuardrailResult(safe=False, guardrail=NAME, message=f"frame {unchecked} could not be classified")
        return GuardrailResult(safe=True, guardrail=NAME)
