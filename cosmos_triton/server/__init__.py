from cosmos_triton.server.launcher_old import *  # noqa: F403  (temporary during the restructure)
from cosmos_triton.server.launcher_old import _parse_args, running_server, settings_from_args  # noqa: F401
