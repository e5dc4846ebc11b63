"""The `exposuremon` command line: the entry point and `scan` (`main`), the daemon's commands
(`daemon_commands`, imported only when one of them runs, so that `scan` starts fast).
"""

from __future__ import annotations

from exposuremon.cli.main import main

__all__ = ["main"]
