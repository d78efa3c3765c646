"""ONNX exports of the served stages (T5, DiT Text2World/Video2World, tokenizer encoder/decoder, video safety).

`python -m export.onnx --help` for the command; export/README.md for what each graph takes and returns.
"""
