"""``python -m corral``: the same as the ``corral`` command."""

from corral.cli import main

main(prog_name="corral")
