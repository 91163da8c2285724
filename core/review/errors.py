"""The one error type of review sessions: its message is a sentence for the person at the screen."""

from __future__ import annotations


class ReviewError(ValueError):
    """A review request that cannot be carried out (unknown session, a name already taken, an answer given twice,
    an unreachable database), with the reason in words."""
