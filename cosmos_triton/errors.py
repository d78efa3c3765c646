"""The errors a request can end with. Each maps to one Triton status (cosmos_triton.backend.triton_io) and
carries a message a user can act on: it names the field, the guardrail or the limit, never a server path."""

from __future__ import annotations


class RequestError(ValueError):
    """A request value outside what the server accepts; the message names the field and the accepted values."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"invalid '{field_name}': {message}")
        self.field = field_name


class GuardrailBlocked(Exception):
    """A guardrail refused the prompt or the video; no video may be produced."""

    def __init__(self, guardrail: str, reason: str = ""):
        super().__init__(f"GUARDRAIL BLOCKED: {guardrail}: {reason or 'unsafe'}")
        self.guardrail = guardrail
        self.reason = reason


class Cancelled(Exception):
    """The client cancelled the request (or its deadline passed); the work stopped at a step boundary."""


class InternalOnly(PermissionError):
    """A direct call of an internal stage: only the entry points may call it."""


class StageRefused(Exception):
    """A stage answered a call with INVALID_ARG (a guardrail block, an undecodable input): the entry point passes
    its message on unchanged."""


class StageFailed(Exception):
    """A stage failed (INTERNAL or UNAVAILABLE); its message is already fit for a client (no paths, no traces)."""
