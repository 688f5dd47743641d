"""Files in and out: interaction and feature readers/writers, and the bundled sample."""

from .files import (
    MAX_ID_LENGTH,
    InputError,
    read_features,
    read_interactions,
    write_features,
    write_interactions,
)

__all__ = [
    "MAX_ID_LENGTH",
    "InputError",
    "read_features",
    "read_interactions",
    "write_features",
    "write_interactions",
]
