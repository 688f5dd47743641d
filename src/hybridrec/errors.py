"""The exceptions hybridrec raises for problems a user can fix.

Each message says what was wrong and what to do; the CLI prints it on one line and exits
non-zero, the API turns it into a 4xx/503 JSON error.
"""

__all__ = ["HybridrecError", "StoreUnavailable"]


class HybridrecError(Exception):
    """Base class: a problem with input, configuration, an artifact or a store."""


class StoreUnavailable(HybridrecError):
    """Redis cannot be reached, or its URL is malformed."""
