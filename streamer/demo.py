"""``streamer demo``: see the product work within a minute, with no microphone and no files.

(Being built: see issue 12 part 5.)
"""

from __future__ import annotations

import argparse

from .config import Config

__all__ = ["run_demo"]


def run_demo(config: Config, args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C (or ``args.loops`` passes); the exit code."""
    raise NotImplementedError("streamer demo is not built yet")
