"""SDK-HMAC-SHA256: the request signature of Huawei Cloud's official SDKs.

Signing and verification share one canonical form, written to match
`huaweicloudsdkcore/signer/signer.py` byte for byte (the algorithm is only
documented by that code, so it is reproduced here rather than imported: the
SDK's signer works on its own request objects and has no verifier):

    canonical request = METHOD \\n canonical URI \\n canonical query \\n
                        canonical headers \\n signed headers \\n hex(sha256(body))
    string to sign    = "SDK-HMAC-SHA256" \\n X-Sdk-Date \\n hex(sha256(canonical request))
    signature         = hex(hmac_sha256(sk, string to sign))

- canonical URI: every segment of the unquoted path percent-encoded (only `~`
  safe besides unreserved characters), always ending in `/`;
- canonical query: (key, value) pairs sorted, both percent-encoded, joined by `&`;
- signed headers: every header the client sends except names containing `_`,
  lower-cased and sorted; canonical headers are `name:value` with values stripped;
- the body hash is the empty-string hash for an empty body, otherwise the value of
  `X-Sdk-Content-Sha256` when the client sent one, otherwise sha256 of the body.

`BasicCredentials` adds `X-Project-Id` before signing, so the project is signed
too; the verifier scopes each key to its project.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
DATE_HEADER = "X-Sdk-Date"
PROJECT_HEADER = "X-Project-Id"
CONTENT_HASH_HEADER = "X-Sdk-Content-Sha256"
EMPTY_BODY_HASH = hashlib.sha256(b"").hexdigest()
# docs/behaviour.md §1.10: a signature more than 15 minutes off the server's clock is refused.
MAX_CLOCK_SKEW = timedelta(minutes=15)

# Headers a request may carry once: with two, the signature would be checked on one
# (the last, as headers are mapped by name) while a proxy or a log may use the other.
SINGLE_HEADERS = ("authorization", DATE_HEADER.lower(), PROJECT_HEADER.lower())

_AUTHORIZATION = re.compile(
    r"^\s*" + re.escape(ALGORITHM) + r"\s+Access=(?P<ak>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<headers>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-fA-F]+)\s*$"
)


# A host name as agents register it (the same rule as the API's `host` fields).
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


@dataclass(frozen=True)
class Credential:
    """One access key: the secret that signs with it and the only project it may touch.

    `host` set: an agent's key, serving that one host of the project and nothing else
    (see `vxtap.api.access`); `host` None: one of the project's administrators.
    """

    ak: str
    sk: str
    project_id: str
    host: str | None = None


def is_administrator(credential: Credential) -> bool:
    """True for a project administrator's key, False for a host agent's key.

    Anything that is not the agent channel (the v3 API, enrolment, a console sign-in)
    must ask this and refuse agent keys.
    """
    return credential.host is None


class AuthError(Exception):
    """The request is not authenticated (401) or not allowed for this key's project (403)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _encode(text: str) -> str:
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    encoded = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return encoded if encoded.endswith("/") else encoded + "/"


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Decode a raw query string into (key, value) pairs, `+` kept literal as the SDK does."""
    pairs: list[tuple[str, str]] = []
    for item in raw_query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(pairs))


def canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: list[str],
    payload_hash: str,
) -> str:
    """`headers` maps lower-case names to values; every name in `signed_headers` must be in it."""
    canonical_headers = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_headers)
    return "\n".join(
        (
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            canonical_headers,
            ";".join(signed_headers),
            payload_hash,
        )
    )


def string_to_sign(canonical: str, date: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{date}\n{digest}"


def signature(sk: str, to_sign: str) -> str:
    return hmac.new(sk.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def _payload_hash(body: bytes, headers: Mapping[str, str]) -> str:
    if not body:
        return EMPTY_BODY_HASH
    declared = headers.get(CONTENT_HASH_HEADER.lower())
    if declared:
        return declared.strip()
    return hashlib.sha256(body).hexdigest()


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    ak: str,
    sk: str,
    project_id: str,
    *,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers to add to a request so that it carries the SDK's signature.

    `headers` are the headers the request will send besides these (e.g.
    Content-Type); all of them are signed, as the SDK does. The request must be
    sent to exactly `url` with exactly `body`.
    """
    when = (now or datetime.now(UTC)).astimezone(UTC)
    parts = urlsplit(url)
    added = {
        DATE_HEADER: when.strftime(DATE_FORMAT),
        "Host": parts.netloc,
        PROJECT_HEADER: project_id,
    }
    all_headers = {k.lower(): v for k, v in {**headers, **added}.items()}
    signed = sorted(name for name in all_headers if "_" not in name)
    canonical = canonical_request(
        method,
        parts.path or "/",
        parse_query(parts.query),
        all_headers,
        signed,
        _payload_hash(body, all_headers),
    )
    sig = signature(sk, string_to_sign(canonical, added[DATE_HEADER]))
    added["Authorization"] = (
        f"{ALGORITHM} Access={ak}, SignedHeaders={';'.join(signed)}, Signature={sig}"
    )
    return added


def access_key(headers: Mapping[str, str]) -> str | None:
    """The access key a request claims to be signed with (not yet verified), or None."""
    match = _AUTHORIZATION.match(headers.get("authorization", ""))
    return None if match is None else match["ak"]


def repeated_header(names: Iterable[str]) -> str | None:
    """The first of `SINGLE_HEADERS` that occurs more than once among `names` (any case)."""
    seen: set[str] = set()
    for name in names:
        lowered = name.lower()
        if lowered in SINGLE_HEADERS:
            if lowered in seen:
                return lowered
            seen.add(lowered)
    return None


def verify(
    method: str,
    path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    lookup: Callable[[str], Credential | None],
    *,
    now: datetime | None = None,
) -> Credential:
    """Check a request's signature; return the credential that signed it or raise AuthError.

    `headers` maps lower-case header names to values (as ASGI servers deliver them).
    """
    authorization = headers.get("authorization")
    if not authorization:
        raise AuthError("missing Authorization header: requests must be signed with " + ALGORITHM)
    match = _AUTHORIZATION.match(authorization)
    if match is None:
        raise AuthError(
            f"malformed Authorization header: expected '{ALGORITHM} Access=AK, "
            "SignedHeaders=..., Signature=...'"
        )
    signed = match["headers"].split(";")
    if DATE_HEADER.lower() not in signed:
        raise AuthError(f"the {DATE_HEADER} header must be signed")
    for name in signed:
        if name not in headers:
            raise AuthError(f"signed header {name!r} is missing from the request")
    if PROJECT_HEADER.lower() in headers and PROJECT_HEADER.lower() not in signed:
        raise AuthError(f"the {PROJECT_HEADER} header must be signed")
    date_text = headers[DATE_HEADER.lower()].strip()
    try:
        date = datetime.strptime(date_text, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise AuthError(
            f"{DATE_HEADER} {date_text!r} is not of the form YYYYMMDDTHHMMSSZ"
        ) from None
    current = now or datetime.now(UTC)
    if abs(current - date) > MAX_CLOCK_SKEW:
        raise AuthError(
            f"{DATE_HEADER} {date_text} is more than 15 minutes away from the server's clock "
            f"({current.strftime(DATE_FORMAT)})"
        )
    declared_hash = headers.get(CONTENT_HASH_HEADER.lower())
    if body and declared_hash and declared_hash.strip() != hashlib.sha256(body).hexdigest():
        raise AuthError(
            f"{CONTENT_HASH_HEADER} does not match the body (unsigned bodies are refused)"
        )
    credential = lookup(match["ak"])
    if credential is None:
        raise AuthError(f"unknown access key {match['ak']!r}")
    canonical = canonical_request(
        method, path, parse_query(raw_query), headers, signed, _payload_hash(body, headers)
    )
    expected = signature(credential.sk, string_to_sign(canonical, date_text))
    if not hmac.compare_digest(expected, match["signature"].lower()):
        raise AuthError("signature does not match: wrong secret key, or the request was altered")
    project_header = headers.get(PROJECT_HEADER.lower())
    if project_header is not None and project_header.strip() != credential.project_id:
        raise AuthError(
            f"{PROJECT_HEADER} {project_header.strip()!r} is not this access key's project", 403
        )
    return credential


# A POSIX access ACL as Linux stores it (linux/posix_acl_xattr.h): a little-endian u32
# version 2, then entries of (tag u16, permissions u16, id u32).
ACL_XATTR = "system.posix_acl_access"
_ACL_HEADER, _ACL_ENTRY = struct.Struct("<I"), struct.Struct("<HHI")
_ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 0x02, 0x04, 0x08, 0x10, 0x20


def acl_others(acl: bytes, reader: int) -> str | None:
    """Who besides the owner and `reader` (a user id) may access a file with access ACL
    `acl`, described for a message, or None when nobody may.

    systemd hands a service its LoadCredential= files like this: owned by root, mode
    0400, and an ACL entry that lets the service's user read it. The ACL's mask then
    shows as the group bits (mode 0440) though no group may read the file, so the
    mode alone cannot say whether a file with an ACL is private.
    """
    if len(acl) < _ACL_HEADER.size or (len(acl) - _ACL_HEADER.size) % _ACL_ENTRY.size:
        return "an ACL this check cannot read"
    entries = [
        _ACL_ENTRY.unpack_from(acl, offset)
        for offset in range(_ACL_HEADER.size, len(acl), _ACL_ENTRY.size)
    ]
    mask = next((perm for tag, perm, _ in entries if tag == _ACL_MASK), 0o7)
    others: list[str] = []
    for tag, perm, ident in entries:
        granted = perm & (0o7 if tag == _ACL_OTHER else mask)
        if not granted:
            continue
        if tag == _ACL_USER and ident != reader:
            others.append(f"user {ident}")
        elif tag == _ACL_GROUP:
            others.append(f"group {ident}")
        elif tag == _ACL_GROUP_OBJ:
            others.append("the file's group")
        elif tag == _ACL_OTHER:
            others.append("everyone")
    return ", ".join(others) or None


def check_private(path: Path, what: str) -> None:
    """Refuse a secret file that anyone but its owner may read or write (as ssh does for
    private keys): the refusal names the mode and the fix. Raise ValueError.

    A file with an access ACL is judged by its ACL instead: it may also let this process's
    own user read it, which is how systemd's LoadCredential= hands a file to a service.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        acl: bytes | None = os.getxattr(path, ACL_XATTR)
    except OSError:  # no ACL, or a file system without ACLs: the mode says it all
        acl = None
    if acl is not None:
        others = acl_others(acl, os.geteuid())
        if others is not None:
            raise ValueError(
                f"{what} {path} is accessible by others ({others}, through its ACL); it "
                f"holds secret keys: run 'setfacl -b {path}' and 'chmod 600 {path}'"
            )
    elif mode & 0o077:
        raise ValueError(
            f"{what} {path} is accessible by others (mode {mode:04o}); "
            f"it holds secret keys: run 'chmod 600 {path}'"
        )


def load_credentials(path: Path) -> dict[str, Credential]:
    """Read a JSON list of {"ak", "sk", "project_id"} (administrators) and
    {"ak", "sk", "project_id", "host"} (host agents); raise ValueError naming the problem,
    also when the file is readable by anyone but its owner."""
    check_private(path, "credentials file")
    try:
        entries = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read credentials file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"credentials file {path} is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ValueError(f"credentials file {path} must hold a JSON list of {{ak, sk, project_id}}")
    credentials: dict[str, Credential] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) and entry.get(k) for k in ("ak", "sk", "project_id")
        ):
            raise ValueError(
                f"credentials file {path}, entry {index}: "
                "needs non-empty strings ak, sk, project_id"
            )
        if len(entry["project_id"]) > 64:
            raise ValueError(
                f"credentials file {path}, entry {index}: project_id is longer than 64 characters"
            )
        host = entry.get("host")
        if host is not None and not (isinstance(host, str) and HOST_NAME.fullmatch(host)):
            raise ValueError(
                f"credentials file {path}, entry {index}: host must be a host name "
                "(letters, digits, '.', '-', '_')"
            )
        if entry["ak"] in credentials:
            raise ValueError(f"credentials file {path}: access key {entry['ak']!r} appears twice")
        credentials[entry["ak"]] = Credential(entry["ak"], entry["sk"], entry["project_id"], host)
    return credentials
