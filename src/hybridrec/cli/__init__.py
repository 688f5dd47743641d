"""The ``hybridrec`` command line (click).

``main`` is the group; each ``_*.py`` module beside this one adds its commands. Global
options build one :class:`Env` that commands reach with ``click.pass_obj``; it connects
to Redis and the model store lazily, so ``--help`` never touches them.
"""

from __future__ import annotations

import sys

import click

from ..config import Settings
from ..errors import HybridrecError
from ._env import Env

__all__ = ["main", "Env"]


class _Group(click.Group):
    """Turns the errors a user can fix into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HybridrecError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--redis-url",
    envvar="HYBRIDREC_REDIS_URL",
    default=None,
    help="redis://, rediss://, unix:// or redis+cluster://; default: embedded Redis "
    "under ./.hybridrec/",
)
@click.option(
    "--model-store",
    envvar="HYBRIDREC_MODEL_STORE",
    default=None,
    help="Directory (or fsspec URL) of model artifacts; default ./.hybridrec/models",
)
@click.version_option(package_name="hybridrec")
@click.pass_context
def main(ctx: click.Context, redis_url: str | None, model_store: str | None) -> None:
    """hybridrec: a LightFM hybrid recommender as a service."""
    try:
        settings = Settings.from_env(redis_url=redis_url, model_store=model_store)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    ctx.obj = Env(settings)
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    from . import _model  # noqa: F401  (train, evaluate, recommend, similar, tune)

    for name in ("_store", "_serve", "_fresh"):
        try:
            __import__(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise


_register()
