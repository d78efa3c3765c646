"""Prompt upsamplers: the Text2World Mistral-NeMo-12B upsampler on Hugging Face `transformers`."""
