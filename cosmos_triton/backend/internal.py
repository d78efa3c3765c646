"""Who may call an internal stage: only the entry points, which attach the per-launch token to every BLS call.

The launcher draws a fresh token for every server start and hands it to the server process in its environment
(never in a model config: clients can read configs). Internal stages refuse any request that does not carry it;
the token never appears in an output, an error or a config. No token in the environment means every internal call
is refused (fail closed): start the server with `python -m cosmos_triton.server`.
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any

from cosmos_triton.errors import InternalOnly

TOKEN_ENV = "COSMOS_INTERNAL_TOKEN"
TOKEN_PARAMETER = "cosmos_internal_token"
REFUSAL = "internal stage: call the text2world or video2world entry point (or their _stream twins)"


def server_token() -> str:
    return os.environ.get(TOKEN_ENV, "")


def internal_parameters(token: str) -> dict[str, str]:
    """The request parameters a BLS call from an entry point carries."""
    return {TOKEN_PARAMETER: token}


def require_internal(request: Any, token: str) -> None:
    """Raise InternalOnly unless the request carries this launch's token (compared in constant time)."""
    try:
        supplied = json.loads(request.parameters() or "{}").get(TOKEN_PARAMETER)
    except (ValueError, AttributeError):
        supplied = None
    if not token or not isinstance(supplied, str) or not hmac.compare_digest(supplied.encode(), token.encode()):
        raise InternalOnly(REFUSAL)
