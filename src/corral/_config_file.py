"""Where corral's configuration file is: ``$CORRAL_CONFIG``, else the nearest ``corral.toml``
or ``pyproject.toml`` with ``[tool.corral]`` from the working directory up.

Light on purpose (no pydantic): every command asks it first, and only when it finds a file
does the CLI load :mod:`corral._config` to read and check it.
"""

from __future__ import annotations

import os
from pathlib import Path

from corral._errors import ConfigError

__all__ = ["ENV_SECTION_VAR", "FILE_NAME", "FILE_VAR", "find_config_file", "read_config_text"]

ENV_SECTION_VAR = "CORRAL_ENV"  # which [env.NAME] section applies
FILE_VAR = "CORRAL_CONFIG"  # a configuration file to use instead of looking for one
FILE_NAME = "corral.toml"


def find_config_file(start: Path | None = None) -> tuple[Path, tuple[str, ...]] | None:
    """The configuration file and the table in it that holds corral's settings: ``$CORRAL_CONFIG``,
    else the nearest ``corral.toml``, or ``pyproject.toml`` with ``[tool.corral]``, in
    ``start`` (the working directory) and its parents. None when there is none."""
    given = os.environ.get(FILE_VAR)
    if given:
        path = Path(given)
        if not path.is_file():
            raise ConfigError(f"{FILE_VAR}={given}: no such file")
        return path, (("tool", "corral") if path.name == "pyproject.toml" else ())
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / FILE_NAME
        if candidate.is_file():
            return candidate, ()
        pyproject = directory / "pyproject.toml"
        # Cheap test before parsing: most pyproject files have no [tool.corral].
        if pyproject.is_file() and "tool.corral" in read_config_text(pyproject):
            return pyproject, ("tool", "corral")
    return None


def read_config_text(path: Path) -> str:
    """The file's text; ConfigError when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
