"""``python -m corral``: the same as the ``corral`` command."""

import sys

try:
    from corral.cli import main
except KeyboardInterrupt:  # Ctrl-C while corral is still loading: nothing has started
    sys.stderr.write("interrupted\n")
    sys.exit(130)

main(prog_name="corral")
