"""Helpers the tests share, imported as `support.<module>` (tests/ is on the path:
pyproject.toml's pytest `pythonpath`), so their types reach the tests."""
