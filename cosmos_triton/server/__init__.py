"""The launcher: finds tritonserver, renders the model repository for the chosen checkpoints, starts, watches
and stops the server. `python -m cosmos_triton.server` (or `cosmos-serve`) is its command line.

    install.py     where tritonserver and its Python stub are, and what they need around them
    repository.py  every config.pbtxt, generated through Triton's ModelConfig schema
    process.py     one server process: start, readiness, admin calls, stop
    cli.py         the command line
"""

from typing import Any

__all__ = ["ServerError", "ServerHandle", "running_server", "start_server"]


def __getattr__(name: str) -> Any:
    # lazy, so that `python -m cosmos_triton.server.repository` does not import itself twice
    if name == "ServerError":
        from cosmos_triton.server.install import ServerError

        return ServerError
    if name in __all__:
        from cosmos_triton.server import process

        return getattr(process, name)
    raise AttributeError(name)
