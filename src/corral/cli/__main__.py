"""``python -m corral.cli``: the command line, as the ``corral`` script runs it."""

from corral.cli import main

main(prog_name="corral")
