#!/usr/bin/env python3
"""Text2World client (the same as `cosmos-text2world`; see cosmos_triton/client/text2world.py)."""

import sys

from cosmos_triton.client.text2world import main

if __name__ == "__main__":
    sys.exit(main())
