"""One meaning per class name: no class name is defined twice in `src/vxtap`.

Two classes of one name (say a Protocol and a process manager both called
`ControlPlane`) make every import and every traceback ambiguous for a reader.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import vxtap

SOURCE = Path(vxtap.__file__).parent


def class_definitions() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                found[node.name].append(f"{path.relative_to(SOURCE)}:{node.lineno}")
    return found


def test_no_class_name_is_defined_twice() -> None:
    twice = {name: where for name, where in class_definitions().items() if len(where) > 1}
    assert twice == {}


def test_the_scan_sees_every_class() -> None:
    """The scan would pass vacuously if it read nothing: it finds known classes."""
    found = class_definitions()
    assert "agent/channel.py" in found["ControlPlane"][0]
    assert found["LabProcesses"] and found["DecodedPacket"] and found["Packet"]
