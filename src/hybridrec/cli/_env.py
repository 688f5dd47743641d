"""Lazily built resources shared by CLI commands."""

from __future__ import annotations

from functools import cached_property

from ..config import Settings


class Env:
    """What commands need, built on first use: Redis, feature store, registry, models."""

    def __init__(self, settings: Settings):
        self.settings = settings

    @cached_property
    def redis(self):
        from ..store.connection import connect

        return connect(self.settings)

    @cached_property
    def feature_store(self):
        from ..store.features import FeatureStore

        return FeatureStore(
            self.redis, self.settings.key_prefix, self.settings.interaction_log_maxlen
        )

    @cached_property
    def registry(self):
        from ..modelstore.registry import Registry

        return Registry(self.redis, self.settings.key_prefix)

    @cached_property
    def model_store(self):
        from ..modelstore.store import ModelStore

        return ModelStore(self.settings.model_store)

    @cached_property
    def archive(self):
        """The log's Parquet archive (``HYBRIDREC_ARCHIVE``; maybe empty)."""
        from ..store.log import Archive

        return Archive(self.settings.archive_url)

    def close(self) -> None:
        client = self.__dict__.get("redis")
        if client is not None:
            try:
                client.close()
            except Exception:  # closing must not mask the command's own outcome
                pass
