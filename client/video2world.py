#!/usr/bin/env python3
"""Video2World client (the same as `cosmos-video2world`; see cosmos_triton/client/video2world.py)."""

import sys

from cosmos_triton.client.video2world import main

if __name__ == "__main__":
    sys.exit(main())
