"""The typed error raised by the non-seed methods."""

from __future__ import annotations

from typing import Optional

import grpc

SQLSTATE_METADATA_KEY = "iadb-sqlstate"


class DatabaseError(Exception):
    """A call that the server (or the transport) answered with an error.

    ``code`` is the ``grpc.StatusCode`` (INVALID_ARGUMENT for a syntax error
    or a bad parameter, ALREADY_EXISTS for a unique violation, UNAVAILABLE
    when the server or the engine cannot be reached, ...), ``message`` the
    server's message, and ``sqlstate`` the SQLSTATE or engine error code
    from the ``iadb-sqlstate`` metadata, when the engine reported one.
    """

    def __init__(self, code: grpc.StatusCode, message: str, sqlstate: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.sqlstate = sqlstate

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, grpc.StatusCode) else str(self.code)
        extra = " (sqlstate %s)" % self.sqlstate if self.sqlstate else ""
        return "%s: %s%s" % (name, self.message, extra)

    def __repr__(self) -> str:
        return "DatabaseError(code=%s, message=%r, sqlstate=%r)" % (
            getattr(self.code, "name", self.code),
            self.message,
            self.sqlstate,
        )

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later (UNAVAILABLE)."""
        return self.code == grpc.StatusCode.UNAVAILABLE


def _sqlstate(metadata) -> Optional[str]:
    for item in metadata or ():
        key, value = item
        if key == SQLSTATE_METADATA_KEY:
            return value.decode() if isinstance(value, bytes) else value
    return None


def from_rpc_error(e: grpc.RpcError) -> DatabaseError:
    """A ``grpc.RpcError`` (sync or asyncio) as a ``DatabaseError``."""
    try:
        code = e.code()
    except Exception:
        code = grpc.StatusCode.UNKNOWN
    try:
        message = e.details() or ""
    except Exception:
        message = ""
    if not message:
        message = "server answered %s" % getattr(code, "name", code)
    sqlstate = None
    for getter in ("trailing_metadata", "initial_metadata"):
        try:
            md = getattr(e, getter)()
        except Exception:
            md = None
        sqlstate = _sqlstate(md)
        if sqlstate:
            break
    return DatabaseError(code, message, sqlstate)
