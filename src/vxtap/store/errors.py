"""Refusals, each with the HTTP status and Huawei-style error code it answers with.

Codes follow Huawei's VPC catalogue where it has one (VPC.0002 bad request,
VPC.0003 not found, VPC.0008 bad credentials); conflicts have vxtap's own codes,
documented in docs/control-plane.md.
"""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    code = "VPC.0500"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadInput(ApiError):
    status = 400
    code = "VPC.0002"


class Unauthorized(ApiError):
    status = 401
    code = "VPC.0008"


class Forbidden(ApiError):
    status = 403
    code = "VPC.0007"


class NotFound(ApiError):
    status = 404
    code = "VPC.0003"


class Conflict(ApiError):
    status = 409
    code = "VPC.2900"


class Busy(ApiError):
    """The database did not let the request through in time (another writer's lock)."""

    status = 503
    code = "VPC.0503"


# Conflict codes.
IN_USE = "VPC.2901"  # deleting a filter or port a session still names
DUPLICATE_PRIORITY = "VPC.2902"  # rule priority per filter+direction, session priority per source
QUOTA = "VPC.2903"  # 10 sources per session, 3 sessions per source
EXISTS = "VPC.2904"  # a port with this host and device exists
CONCURRENT = "VPC.2905"  # a concurrent change got there first; retry
