"""Procedural shape videos with captions (the small model's training data) and the quality measures of its output.

- `scenes`: what a clip shows (shape, colour, motion, background, camera), drawn from a seed; held-out pairs
- `captions`: varied plain-English captions of a scene; held-out phrasings
- `render`: scenes to uint8 frames with torch (CPU or GPU)
- `metrics`: named-colour presence, centroid direction, PSNR, SSIM
- `oracle`: the fixed evaluation caption set and its scoring
"""

DATA_VERSION = "synthetic-shapes-v1"  # bump when scenes, captions or rendering change what a seed produces
