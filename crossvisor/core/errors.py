"""The error types every layer shares, and which of them Temporal must never retry.

The split decides grades: an ``InteropFailure`` is a *result* (a failing grade with evidence, never
retried); an ``InfraFault`` is infrastructure trouble that a retry may fix; the rest are input or
configuration problems that no retry can fix, so retrying them only wastes the policy (or, for a
wrong password, locks the account).
"""

from __future__ import annotations


class InfraFault(Exception):
    """Transient infrastructure trouble: retried by Temporal."""


class HostUnreachable(InfraFault):
    """The host's management daemon or API does not answer (its socket is missing, the connection
    is refused): infrastructure, retried; when the retries are spent, the cell's error names the
    host and the daemon, never a grade and never "unhealthy" (a host that answers but fails is)."""


class InteropFailure(Exception):
    """A real interop incompatibility the target (or the package) reported: a failing grade, never retried."""

    def __init__(self, reason: str, evidence: dict[str, str] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.evidence = evidence or {}


class InventoryError(Exception):
    """Bad inventory data or a bad selection (e.g. an unknown filter). Not retryable."""


class CredentialError(Exception):
    """A reference that cannot be resolved, or credentials the endpoint rejected.

    Not an InfraFault: retrying a wrong password only risks locking the account.
    """


class BadInput(Exception):
    """Malformed input met inside a stage (a package, an image, a record): not retryable, and the
    message names what is wrong."""


class NameTaken(BadInput):
    """A VM (or volume) with the name a cell derives for itself exists on the host and is not that
    cell's own (its recorded owner differs or is missing): another tool's object, or another
    campaign's. Adopting it would grade someone else's VM and deleting it would destroy it; no retry
    changes who owns it, so the message names the object, the host and its owner."""


class WrongSite(Exception):
    """A stage reached a worker of another site than its host's: a routing or configuration error
    (CROSSVISOR_SITE / CROSSVISOR_SITE_QUEUES), never retried on the same worker."""


# Exception type names (Temporal matches on the class name) that end an activity's retries at once.
NON_RETRYABLE = (
    "InventoryError",
    "NetBoxAuthError",
    "SpecError",
    "OvfError",
    "UriError",
    "CredentialError",
    "NoDiskContent",
    "HostUnhealthy",
    "BadInput",
    "InputFileError",  # a BadInput: Temporal matches the class name, not the hierarchy
    "CorruptImage",
    "CorruptPackage",
    "WrongSite",
    "NameTaken",
)
