"""The OpenAPI document is pinned byte for byte: moving the API's code around (routers,
the wire package, error mapping) must not change what clients and fuzzers are told.

A deliberate change of the API regenerates the snapshot, reviewed in the diff:

    PYTHONPATH=src .venv/bin/python tests/api/test_openapi_snapshot.py
"""

from __future__ import annotations

import json
from pathlib import Path

from vxtap.api.app import create_app
from vxtap.store.db import Store

SNAPSHOT = Path(__file__).with_name("openapi_snapshot.json")


def current_document(tmp: Path) -> str:
    store = Store(f"sqlite:///{tmp / 'openapi.db'}")
    try:
        store.upgrade()
        app = create_app(store, {}, agent_signing_key=b"k" * 32)
        return json.dumps(app.openapi(), sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    finally:
        store.dispose()


def test_openapi_document_is_unchanged(tmp_path: Path) -> None:
    assert current_document(tmp_path) == SNAPSHOT.read_text(encoding="utf-8")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        SNAPSHOT.write_text(current_document(Path(directory)), encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
