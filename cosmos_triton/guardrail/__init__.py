"""Cosmos-1.0 guardrails (reference §7): text = [Blocklist, Aegis], video = [content safety] then face blur."""
