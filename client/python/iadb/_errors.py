"""The typed error raised by the non-seed methods."""

from __future__ import annotations

import re
from typing import Optional

import grpc

SQLSTATE_METADATA_KEY = "iadb-sqlstate"

# How gRPC words a call that failed before it reached any server: no
# connection could be made, so the request was never sent (and a write in it
# cannot have been applied).
_UNSENT_PREFIXES = (
    "failed to connect to all addresses",
    "dns resolution failed",
    "cannot reach iadb server",
)


class DatabaseError(Exception):
    """A call that the server (or the transport) answered with an error.

    ``code`` is the ``grpc.StatusCode`` (INVALID_ARGUMENT for a syntax error
    or a bad parameter, ALREADY_EXISTS for a unique violation, UNAVAILABLE
    when the server or the engine cannot be reached, ...), ``message`` the
    server's message, and ``sqlstate`` the SQLSTATE or engine error code
    from the ``iadb-sqlstate`` metadata, when the engine reported one.

    ``statement_index`` names the failing statement of a batch.
    ``commit_outcome_unknown`` is True when a transaction's commit was sent
    and no answer came back (the connection was lost, the deadline passed,
    the server or its engine went away): it may have been applied or not, so
    such an error is never ``retryable`` nor ``never_sent``.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        sqlstate: Optional[str] = None,
        *,
        commit_outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.sqlstate = sqlstate
        self.commit_outcome_unknown = commit_outcome_unknown

    @property
    def statement_index(self) -> Optional[int]:
        """The 0-based index of the failing statement of a batch (the
        server's ``statement N: ...`` message), else None."""
        m = _STATEMENT_INDEX.match(self.message)
        return int(m.group(1)) if m else None

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, grpc.StatusCode) else str(self.code)
        extra = " (sqlstate %s)" % self.sqlstate if self.sqlstate else ""
        return "%s: %s%s" % (name, self.message, extra)

    def __repr__(self) -> str:
        return "DatabaseError(code=%s, message=%r, sqlstate=%r%s)" % (
            getattr(self.code, "name", self.code),
            self.message,
            self.sqlstate,
            ", commit_outcome_unknown=True" if self.commit_outcome_unknown else "",
        )

    @property
    def retryable(self) -> bool:
        """Whether a *read* may be repeated (UNAVAILABLE).

        Not a licence to repeat a write: an UNAVAILABLE that arrives after
        the request reached the server may come from a write that was
        committed (the engine went away before the answer). For writes see
        ``never_sent``.
        """
        return self.code == grpc.StatusCode.UNAVAILABLE and not self.commit_outcome_unknown

    @property
    def never_sent(self) -> bool:
        """Whether the request certainly never reached a server (no
        connection could be made), so that even a write may be repeated."""
        return (
            self.code == grpc.StatusCode.UNAVAILABLE
            and not self.commit_outcome_unknown
            and self.message.lower().startswith(_UNSENT_PREFIXES)
        )

    def retryable_for(self, write: bool) -> bool:
        """``retryable`` for a read, ``never_sent`` for a write."""
        return self.never_sent if write else self.retryable


# A Batch's failure names its statement: "statement 2: ...".
_STATEMENT_INDEX = re.compile(r"statement (\d+): ")

# The codes of a commit whose answer never came: the commit may have been
# applied. Any other error of a commit is the server's answer (the commit
# failed and the transaction was rolled back).
COMMIT_UNKNOWN_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
})


def commit_error(e: DatabaseError) -> DatabaseError:
    """An error that ended a commit: marked outcome-unknown when it is not
    a definite answer from the server."""
    if e.code in COMMIT_UNKNOWN_CODES and not e.commit_outcome_unknown:
        return DatabaseError(
            e.code,
            "the commit's outcome is unknown (it may have been applied): " + e.message,
            e.sqlstate,
            commit_outcome_unknown=True,
        )
    return e


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
    if code == grpc.StatusCode.CANCELLED and message == "Timeout expired":
        # A tonic server answers its own deadline timer with CANCELLED
        # "Timeout expired", at the same instant as our timer: either way
        # the call's deadline passed, and that is DEADLINE_EXCEEDED.
        code = grpc.StatusCode.DEADLINE_EXCEEDED
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
