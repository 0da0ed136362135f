"""Host agents' credentials: issued at run time, never stored in the database.

SDK-HMAC-SHA256 is a shared-secret scheme: the server needs the very secret the
agent signs with to check a signature, so a hash of the secret (what one keeps
of a bearer token) cannot verify anything. Instead the secret is *derived*:

    sk = base64url(HMAC-SHA256(agent signing key, "vxtap-agent-sk-v1" ‖ project ‖ host ‖ ak))

The agent signing key is 32 random bytes in a file of the server's (mode 0600,
next to its credentials file); the database keeps only (project, host, ak). A
copy of the database therefore hands out no working credential, and an
enrolment is revoked by deleting its row. Every server process of a deployment
needs the same signing key file, as it needs the same credentials file;
replacing the file invalidates every enrolled host's key at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from vxtap.auth import Credential, check_private

SIGNING_KEY_FILE = "agent-signing.key"
SIGNING_KEY_BYTES = 32
_CONTEXT = b"vxtap-agent-sk-v1"


def new_access_key() -> str:
    """A fresh agent access key: recognisably an agent's (`VXTAPH`), 80 random bits."""
    return "VXTAPH" + secrets.token_hex(10).upper()


def agent_secret(signing_key: bytes, project_id: str, host: str, ak: str) -> str:
    """The secret key of agent access key `ak` of `host` in `project_id`."""
    message = b"\0".join((_CONTEXT, project_id.encode(), host.encode(), ak.encode()))
    digest = hmac.new(signing_key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def load_signing_key(path: Path, *, create: bool) -> tuple[bytes, bool]:
    """The agent signing key in `path` (hex), and whether it was created now.

    With `create`, a missing file is made (mode 0600, exclusively: several servers
    starting at once end up with the one key that won). Raise ValueError naming
    the problem: unreadable, readable by others, or not a key.
    """
    created = False
    if create and not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:  # e.g. /etc under systemd's ProtectSystem=strict
            raise ValueError(
                f"cannot create agent signing key file {path}: {exc.strerror}; make it "
                f"yourself ('(umask 077; openssl rand -hex 32 > {path})') or leave it in "
                "a directory the server may write (by default its state directory)"
            ) from None
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(SIGNING_KEY_BYTES) + "\n")
            created = True
    check_private(path, "agent signing key file")
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read agent signing key file {path}: {exc.strerror}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < SIGNING_KEY_BYTES:
        raise ValueError(
            f"agent signing key file {path} must hold at least {SIGNING_KEY_BYTES} random "
            "bytes in hex (e.g. from 'openssl rand -hex 32')"
        )
    return key, created


def write_credential_file(path: Path, credential: Credential) -> None:
    """Write one credential in the credentials-file format, mode 0600; never overwrite."""
    entry = {"ak": credential.ak, "sk": credential.sk, "project_id": credential.project_id}
    if credential.host is not None:
        entry["host"] = credential.host
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump([entry], handle, indent=2)
        handle.write("\n")
