"""`make demo`: serve the given checkpoints, generate one video, stop.

The default prompt is a caption the built-in trained small model knows (cosmos_triton.synthetic), sent as written
(prompt upsampler disabled: the small upsampler would replace it with its one fixed sentence). With the real
checkpoints, pass e.g. `--prompt "$(python -c 'from cosmos_triton.demo import ROBOT_PROMPT; print(ROBOT_PROMPT)')"
--upsample`.

    python -m cosmos_triton.demo --checkpoint_dir checkpoints/small \
        --diffusion_transformer_dir Cosmos-1.0-Diffusion-Small-Text2World --video_save_folder outputs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cosmos_triton.client import text2world as client
from cosmos_triton.deployment import ServeSettings
from cosmos_triton.server import running_server

DEMO_PROMPT = "A red ball moving to the right on a striped background."
# The seed README's Text2World example prompt.
ROBOT_PROMPT = (
    "A sleek, humanoid robot stands in a vast warehouse filled with neatly stacked cardboard boxes on industrial "
    "shelves. The robot's metallic body gleams under the bright, even lighting, highlighting its futuristic design "
    "and intricate joints. A glowing blue light emanates from its chest, adding a touch of advanced technology. The "
    "background is dominated by rows of boxes, suggesting a highly organized storage system. The floor is lined "
    "with wooden pallets, enhancing the industrial setting. The camera remains static, capturing the robot's poised "
    "stance amidst the orderly environment, with a shallow depth of field that keeps the focus on the robot while "
    "subtly blurring the background for a cinematic effect."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_dir", default="checkpoints/small")
    parser.add_argument("--diffusion_transformer_dir", default="Cosmos-1.0-Diffusion-Small-Text2World")
    parser.add_argument("--v2w_diffusion_transformer_dir", default="Cosmos-1.0-Diffusion-Small-Video2World")
    parser.add_argument("--video_save_folder", default="outputs")
    parser.add_argument("--video_save_name", default="demo")
    parser.add_argument("--prompt", default=DEMO_PROMPT)
    parser.add_argument("--upsample", action="store_true", help="let the prompt upsampler rewrite the prompt")
    parser.add_argument("--log_file", default="outputs/demo-server.log")
    args = parser.parse_args(argv)

    settings = ServeSettings(checkpoint_dir=args.checkpoint_dir, dit_dir=args.diffusion_transformer_dir,
                             v2w_dit_dir=args.v2w_diffusion_transformer_dir)
    Path(args.log_file).parent.mkdir(parents=True, exist_ok=True)
    Path(args.log_file).write_text("")
    t0 = time.monotonic()
    print(f"starting Triton on {settings.dit_path} (server log: {args.log_file}) ...", flush=True)
    with running_server(settings, log_file=args.log_file) as server:
        print(f"ready in {time.monotonic() - t0:.1f} s: gRPC {server.grpc_url}, HTTP {server.http_url}", flush=True)
        rc = client.main(["--url", server.grpc_url, "--prompt", args.prompt, "--video_save_folder",
                          args.video_save_folder, "--video_save_name", args.video_save_name,
                          *([] if args.upsample else ["--disable_prompt_upsampler"])])
    print(f"demo finished in {time.monotonic() - t0:.1f} s (exit {rc})", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
