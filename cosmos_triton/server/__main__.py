import sys

from cosmos_triton.server.cli import main

sys.exit(main())
