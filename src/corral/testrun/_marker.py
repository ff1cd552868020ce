"""The pytest plugin corral installs (entry point ``pytest11``): it registers the
``corral`` marker, so that a suite marked for ``corral test`` runs under plain pytest (with
``--strict-markers``) too, with the same results."""

from __future__ import annotations

import pytest

__all__ = ["MARKER", "pytest_configure"]

MARKER = ("corral(after=[...], resources={...}): for corral test, run this test after those "
          "(node ids, or names in the same module) and hold these resources while it runs")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
