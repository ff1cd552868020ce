"""Importable helpers for tests (e.g. ``call:`` targets of pipeline files)."""
