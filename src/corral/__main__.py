"""``python -m corral``: the same as the ``corral`` command."""

from corral._console import main

main()
