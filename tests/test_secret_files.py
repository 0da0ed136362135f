"""vxtap.auth's check of secret files (credentials, the agent signing key, the TLS key):
private to their owner, or, with an ACL, to their owner and the reading process's user,
as systemd's LoadCredential= hands them to a service (docs/security.md)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vxtap.auth import ACL_XATTR, acl_others, check_private, load_credentials

NOBODY = 65534


def setfacl(path: Path, *entries: str) -> None:
    subprocess.run(["setfacl", "-m", ",".join(entries), str(path)], check=True)


def as_systemd_hands_a_credential(path: Path, reader: int) -> None:
    """What systemd's LoadCredential= makes of a file (docs/deploy.md): root's, mode 0400,
    and an ACL entry letting the service's user read it (its mask shows as mode 0440)."""
    path.chmod(0o400)
    setfacl(path, f"u:{reader}:r")
    assert stat.S_IMODE(path.stat().st_mode) == 0o440


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory user nobody can reach (pytest's tmp_path is root's alone)."""
    made = Path(tempfile.mkdtemp(prefix="vxtap-auth-"))
    made.chmod(0o755)
    try:
        yield made
    finally:
        shutil.rmtree(made)


def test_a_credential_systemd_hands_to_its_service_user_is_private_to_it(shared_dir: Path) -> None:
    path = shared_dir / "agent-credentials.json"
    path.write_text(json.dumps([{"ak": "a", "sk": "s", "project_id": "p", "host": "web1"}]))
    as_systemd_hands_a_credential(path, NOBODY)
    acl = os.getxattr(path, ACL_XATTR)
    assert acl_others(acl, reader=NOBODY) is None  # the service's user and root only
    # Root reading it: user nobody is somebody else.
    assert acl_others(acl, reader=0) == f"user {NOBODY}"
    with pytest.raises(ValueError, match=rf"accessible by others \(user {NOBODY}, through its ACL"):
        load_credentials(path)
    # As the service's user (a process of its own, as the agent is), it is accepted.
    read = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c",
         "import sys; from pathlib import Path; from vxtap.auth import load_credentials; "
         "print(sorted(load_credentials(Path(sys.argv[1]))))", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if read.returncode != 0 and "Permission denied" in read.stderr:
        pytest.fail(f"user nobody cannot reach {shared_dir}: {read.stderr}")
    assert (read.returncode, read.stdout, read.stderr) == (0, "['a']\n", "")


@pytest.mark.parametrize(
    ("entry", "who"),
    [("u:1000:r", "user 1000"), ("g:100:r", "group 100"), ("g::r", "the file's group"),
     ("o::r", "everyone")],
)  # fmt: skip
def test_an_acl_letting_anyone_else_read_is_refused(tmp_path: Path, entry: str, who: str) -> None:
    path = tmp_path / "agent-signing.key"
    path.write_text("00" * 32)
    as_systemd_hands_a_credential(path, NOBODY)
    setfacl(path, entry)
    assert acl_others(os.getxattr(path, ACL_XATTR), reader=NOBODY) == who
    with pytest.raises(ValueError, match=r"through its ACL.*setfacl -b"):
        check_private(path, "agent signing key file")


def test_an_acl_masked_to_nothing_grants_nothing(tmp_path: Path) -> None:
    path = tmp_path / "server.key"
    path.write_text("key")
    path.chmod(0o600)
    setfacl(path, "u:1000:rw", "m::-")
    assert acl_others(os.getxattr(path, ACL_XATTR), reader=0) is None
    check_private(path, "TLS key file")
