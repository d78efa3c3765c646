"""Cosmos-1.0 guardrails: text = [Blocklist, Aegis], video = [content safety] then face blur.
See docs/FORMATS.md, Guardrail runners."""
