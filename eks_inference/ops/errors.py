"""One exception for everything the user must fix before a diff or a preflight can run."""

from __future__ import annotations


class OpsError(Exception):
    """A usage or environment problem; the message is one line that names the value and the fix."""
