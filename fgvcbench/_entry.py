"""The ``fgvcbench`` console script: :func:`fgvcbench.cli.main`, with a Ctrl-C that comes
while the CLI itself is still being imported answered as one that comes later — a line and
exit code 130, not a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from fgvcbench.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted — nothing was changed; run the same command again.\n")
        sys.exit(130)
    cli_main()
