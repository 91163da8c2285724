"""Which errors carry a sentence written for users."""

from __future__ import annotations

PACKAGES = ("core", "training", "dashboard")


def is_ours(error: BaseException) -> bool:
    """Whether ``error`` is one of the project's own error types (defined in core, training or dashboard), whose
    message says in words what is wrong and what to do. Anything else is a bug or an accident of the platform,
    and is reported as such."""
    return type(error).__module__.split(".")[0] in PACKAGES
