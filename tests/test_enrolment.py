"""vxtap.enrolment's signing key file: made when missing where the server may write,
and one clear line where it may not (as under the server unit's ProtectSystem=strict)."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vxtap import enrolment

NOBODY = 65534


@pytest.fixture
def root_dir() -> Iterator[Path]:
    """A directory of root's that user nobody may enter but not write (as /etc)."""
    made = Path(tempfile.mkdtemp(prefix="vxtap-enrolment-"))
    made.chmod(0o755)
    try:
        yield made
    finally:
        shutil.rmtree(made)


def test_a_missing_signing_key_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / enrolment.SIGNING_KEY_FILE
    key, created = enrolment.load_signing_key(path, create=True)
    assert created and len(key) == enrolment.SIGNING_KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert enrolment.load_signing_key(path, create=True) == (key, False)


def test_a_signing_key_the_server_cannot_create_is_one_line_with_the_fix(root_dir: Path) -> None:
    path = root_dir / enrolment.SIGNING_KEY_FILE
    program = (
        "import sys; from pathlib import Path; from vxtap import enrolment\n"
        "try:\n"
        "    enrolment.load_signing_key(Path(sys.argv[1]), create=True)\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", program, str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.stderr == ""
    assert out.stdout == (
        f"cannot create agent signing key file {path}: Permission denied; make it yourself "
        f"('(umask 077; openssl rand -hex 32 > {path})') or leave it in a directory the "
        "server may write (by default its state directory)\n"
    )
    assert not path.exists()
    # Made as the message says, it is read.
    subprocess.run(["sh", "-c", f"(umask 077; openssl rand -hex 32 > {path})"], check=True)
    key, created = enrolment.load_signing_key(path, create=True)
    assert not created and len(key) == enrolment.SIGNING_KEY_BYTES
