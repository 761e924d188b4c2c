"""One error hierarchy for every stage; the runtime decides what each kind means.

- ``TransientError``: the world is briefly unavailable (S3, broker). Retried with bounded backoff.
- ``InvalidInputError``: this job's input can never succeed. Not retried: DLQ record + terminal result.
- ``FatalError``: the process cannot go on (bad configuration, fenced producer). Exit non-zero.
"""

from __future__ import annotations

__all__ = ["DeskgenError", "TransientError", "InvalidInputError", "FatalError"]


class DeskgenError(Exception):
    """Root of every error the project raises on purpose."""


class TransientError(DeskgenError):
    """A dependency is unavailable right now; the same work may succeed later."""


class InvalidInputError(DeskgenError):
    """The job's input cannot be processed, ever.

    Args:
        reason: a stable snake_case reason code (e.g. ``image_undecodable``), part of the contract.
        detail: a human-readable explanation.
        status: the terminal status the job ends with: ``rejected`` (the request is unusable)
            or ``failed`` (the pipeline could not process it).
    """

    def __init__(self, reason: str, detail: str = "", *, status: str = "rejected"):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        if status not in ("rejected", "failed"):
            raise ValueError(f"status must be 'rejected' or 'failed', not {status!r}")
        self.reason = reason
        self.detail = detail
        self.status = status


class FatalError(DeskgenError):
    """The service must stop; Kubernetes (or the operator) restarts it."""
