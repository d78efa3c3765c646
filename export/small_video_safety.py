"""Write a tiny SigLIP + safety classifier into a `video_content_safety_filter/` folder.
See docs/FORMATS.md, Guardrail folder and Video content safety.

Layout, as the real Cosmos-1.0-Guardrail folder:
    video_content_safety_filter/safety_filter.pt      {"model": state_dict}, keys network.layers.{0,1,3,4,6}.*
    video_content_safety_filter/models--google--siglip-so400m-patch14-384/{refs/main,
        snapshots/<sha>/{config.json, model.safetensors, preprocessor_config.json}}

SigLIP is `SiglipModel` with the real structure (text and vision towers, attention-pooling head) at toy sizes: 32x32
images in 8x8 patches, 32-d image features (the real one: 384x384, 14x14 patches, 1152-d). The image processor
config is the real one's with only the size changed (bicubic, rescale 1/255, mean = std = 0.5). No text tokenizer
files: only images are encoded, and the guardrail loads the image processor alone.

The classifier has the original's layers with random weights, except the last Linear: weight zero and bias 10 on
class 0, so every frame is "Safe" whatever SigLIP returns, and the demo video passes deterministically.

Usage: python -m export.small_video_safety OUT_DIR [--seed N]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cosmos_triton.guardrail.common import SIGLIP_REPO
from cosmos_triton.guardrail.video_safety import CHECKPOINT_FILE, VideoSafetyModel
from export.small_aegis import snapshot_dir

IMAGE_SIZE = 32
PATCH_SIZE = 8
FEATURE_DIM = 32  # the vision tower's width = the image feature size = the classifier's input size
SAFE_BIAS = 10.0
PREPROCESSOR_CONFIG = {  # the real google/siglip-so400m-patch14-384 file, with the size made tiny
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "SiglipImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "processor_class": "SiglipProcessor",
    "resample": 3,  # PIL bicubic
    "rescale_factor": 1 / 255,
    "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
}


def build_siglip_config():  # -> transformers.SiglipConfig
    from transformers import SiglipConfig, SiglipTextConfig, SiglipVisionConfig

    text = SiglipTextConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        projection_size=FEATURE_DIM,  # text and image embeddings share one space, as in the real model
        pad_token_id=1,
        bos_token_id=None,
        eos_token_id=1,
    )
    vision = SiglipVisionConfig(
        hidden_size=FEATURE_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    return SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())


def build_classifier(input_size: int, seed: int) -> VideoSafetyModel:
    """Random weights and BatchNorm statistics, then a last layer that always votes "Safe"."""
    generator = torch.Generator().manual_seed(seed)
    model = VideoSafetyModel(input_size)
    with torch.no_grad():
        for module in model.network.layers:
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / module.in_features**0.5)
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, torch.nn.BatchNorm1d):
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(1 + 0.1 * torch.rand(module.running_var.shape, generator=generator))
                module.num_batches_tracked.fill_(1000)
        last = model.network.layers[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[0] = SAFE_BIAS
    return model.eval()


def write_small_video_safety(safety_dir: Path, seed: int = 0) -> Path:
    """Write the SigLIP hub cache and safety_filter.pt; byte-identical per seed. Returns safety_dir."""
    from transformers import SiglipModel

    safety_dir = Path(safety_dir)
    snapshot = snapshot_dir(safety_dir, SIGLIP_REPO)
    torch.manual_seed(seed)
    SiglipModel(build_siglip_config()).eval().save_pretrained(snapshot, safe_serialization=True)
    (snapshot / "model.safetensors").chmod(0o644)  # written as 0600 via a temporary file; others load it too
    (snapshot / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2, sort_keys=True) + "\n")
    classifier = build_classifier(FEATURE_DIM, seed)
    torch.save({"model": classifier.state_dict()}, safety_dir / CHECKPOINT_FILE)
    return safety_dir


if __name__ == "__main__":
    from export.writer_cli import run_writer

    run_writer(write_small_video_safety, __doc__)
