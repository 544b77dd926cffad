#!/usr/bin/env python3
"""Entry point: python al_loop.py --config config/al_config.yaml [--resume | --start-iteration N] [--dry-run]
[--auto] [--headless]."""

import sys

from al.cli import main

if __name__ == "__main__":
    sys.exit(main())
