import sys

from cosmos_triton.server.launcher_old import main

sys.exit(main())
