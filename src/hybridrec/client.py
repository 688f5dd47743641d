"""A Python client of the hybridrec HTTP API: one method per endpoint, typed results.

    from hybridrec.client import Client

    with Client("http://127.0.0.1:8000", token="...") as api:
        api.wait_ready()
        rec = api.recommend("42", k=5)
        print(rec.strategy, [(i.item_id, i.score) for i in rec.items])

Results are the msgspec ``Struct`` types the server declares its responses with
(:mod:`hybridrec.serving.validation`), so the client reads exactly what the OpenAPI
document describes; fields a newer server adds are ignored. A refusal raises
:class:`ApiError` with the API's ``status``, ``code`` and ``message``.

Retries: a 503 (no model yet, the store unavailable) and a connection that could not be
made are retried with exponential backoff (``backoff * 2**n`` seconds, at most
``max_backoff``, with jitter; a ``Retry-After`` header wins). A connection lost after the
request was sent is retried only for calls that can be repeated safely (everything but
``POST /v1/interactions``, which would append twice). When the attempts run out the last
error is raised: :class:`ApiError` for a 503, :class:`ConnectionFailed` otherwise.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from .serving.validation import (
    Accepted,
    ItemFeatures,
    ItemSearch,
    ItemStatus,
    ModelInfo,
    ModelVersions,
    PointerMove,
    Recommendations,
    Reload,
    Reports,
    SeenItems,
    SimilarItems,
    Stats,
    Status,
    StoredMetadata,
    UserFeatures,
    Vocabulary,
)

__all__ = [
    "Accepted",
    "ApiError",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "ItemFeatures",
    "ItemSearch",
    "ItemStatus",
    "ModelInfo",
    "ModelVersions",
    "PointerMove",
    "Recommendations",
    "Reload",
    "Reports",
    "SeenItems",
    "SimilarItems",
    "Stats",
    "Status",
    "StoredMetadata",
    "UserFeatures",
    "Vocabulary",
]

T = TypeVar("T")


class ClientError(Exception):
    """Any failure of a :class:`Client` call."""


class ApiError(ClientError):
    """The API refused: HTTP ``status``, its ``code`` (``not_found``, ``unauthorized``,
    ``invalid_parameter``, ...) and its ``message`` (which says what to change)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class ConnectionFailed(ClientError):
    """The server could not be reached (or the connection broke) after every attempt."""


def _segment(value: str) -> str:
    """One path segment: the id percent-encoded, ``/`` included."""
    return quote(str(value), safe="")


class Client:
    """The API at ``base_url``.

    ``token``: the bearer token (default: ``HYBRIDREC_API_TOKEN`` from the environment),
    sent with every call when set; ``timeout``: seconds per attempt (connect, read,
    write); ``retries``: attempts after the first on a 503 or a connection error;
    ``backoff``: the first wait in seconds, doubled each time up to ``max_backoff``;
    ``transport``: an httpx transport (tests, proxies).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ):
        if token is None:
            token = os.environ.get("HYBRIDREC_API_TOKEN") or None
        headers = {"Accept": "application/json", "User-Agent": "hybridrec-client"}
        if token:
            # httpx sends str headers as ASCII: a non-ASCII token goes as its UTF-8 bytes
            headers["Authorization"] = b"Bearer " + token.encode("utf-8")  # type: ignore[assignment]
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _wait(self, attempt: int, response: httpx.Response | None) -> None:
        delay = min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
        if response is not None:
            after = response.headers.get("Retry-After", "")
            if after.isdigit():
                delay = min(self.max_backoff, float(after))
        time.sleep(delay)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        repeatable: bool = True,
    ) -> httpx.Response:
        """The response of a 2xx; :class:`ApiError` or :class:`ConnectionFailed` else."""
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        content = None if json is None else msgspec.json.encode(json)
        headers = {"Content-Type": "application/json"} if content is not None else None
        attempt = 0
        while True:
            response = None
            try:
                response = self._http.request(
                    method, path, params=query, content=content, headers=headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failure: Exception = exc  # nothing was sent: always safe to retry
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError,
                    httpx.ReadTimeout, httpx.WriteTimeout) as exc:  # fmt: skip
                if not repeatable:
                    raise ConnectionFailed(
                        f"{method} {path}: {type(exc).__name__}: {exc} (not retried: the "
                        "server may have applied it)"
                    ) from exc
                failure = exc
            else:
                if response.status_code < 400:
                    return response
                error = _api_error(response)
                if response.status_code != 503:
                    raise error
                failure = error
            if attempt >= self.retries:
                if isinstance(failure, ApiError):
                    raise failure
                raise ConnectionFailed(
                    f"{method} {self._http.base_url}{path}: {type(failure).__name__}: {failure} "
                    f"(after {attempt + 1} attempts)"
                ) from failure
            self._wait(attempt, response)
            attempt += 1

    def _get(self, tp: type[T], path: str, **params: Any) -> T:
        return msgspec.json.decode(self._send("GET", path, params=params).content, type=tp)

    # -- recommendations ----------------------------------------------------------------------

    def recommend(
        self,
        user_id: str,
        *,
        k: int = 10,
        exclude: Sequence[str] = (),
        exclude_seen: bool = True,
        exact: bool = False,
    ) -> Recommendations:
        """``GET /v1/users/{user_id}/recommendations``: top-k from the user's stored
        features and seen items. A long ``exclude`` goes through POST (URL length), and so
        does one with a comma in an id (the query string's separator)."""
        if sum(len(e) + 3 for e in exclude) > 2000 or any("," in e for e in exclude):
            return self.recommend_for(
                user_id=user_id, k=k, exclude=exclude, exclude_seen=exclude_seen, exact=exact
            )
        return self._get(
            Recommendations,
            f"/v1/users/{_segment(user_id)}/recommendations",
            k=k,
            exclude=list(exclude) or None,
            exclude_seen=exclude_seen,
            exact=exact,
        )

    def recommend_for(
        self,
        *,
        user_id: str | None = None,
        features: Mapping[str, float] | None = None,
        k: int = 10,
        exclude: Sequence[str] = (),
        exclude_seen: bool = True,
        exact: bool = False,
        items: Sequence[str] | None = None,
    ) -> Recommendations:
        """``POST /v1/recommendations``: a user and/or inline ``features`` (a new
        visitor), optionally among candidate ``items``."""
        body: dict[str, Any] = {"k": k, "exclude_seen": exclude_seen, "exact": exact}
        if user_id is not None:
            body["user_id"] = user_id
        if features is not None:
            body["features"] = dict(features)
        if exclude:
            body["exclude"] = list(exclude)
        if items is not None:
            body["items"] = list(items)
        response = self._send("POST", "/v1/recommendations", json=body)
        return msgspec.json.decode(response.content, type=Recommendations)

    def similar(self, item_id: str, *, k: int = 10) -> SimilarItems:
        """``GET /v1/items/{item_id}/similar``: nearest items in latent space."""
        return self._get(SimilarItems, f"/v1/items/{_segment(item_id)}/similar", k=k)

    # -- features and interactions ----------------------------------------------------------

    def user_features(self, user_id: str) -> UserFeatures:
        """``GET /v1/users/{user_id}/features`` (a user's data: needs the token if set)."""
        return self._get(UserFeatures, f"/v1/users/{_segment(user_id)}/features")

    def put_user_features(self, user_id: str, features: Mapping[str, float]) -> UserFeatures:
        """``PUT /v1/users/{user_id}/features``: replace them."""
        return self._put(UserFeatures, "users", user_id, features)

    def delete_user_features(self, user_id: str) -> None:
        """``DELETE /v1/users/{user_id}/features``."""
        self._send("DELETE", f"/v1/users/{_segment(user_id)}/features")

    def item_features(self, item_id: str) -> ItemFeatures:
        """``GET /v1/items/{item_id}/features``."""
        return self._get(ItemFeatures, f"/v1/items/{_segment(item_id)}/features")

    def put_item_features(self, item_id: str, features: Mapping[str, float]) -> ItemFeatures:
        """``PUT /v1/items/{item_id}/features``: the item becomes recommendable within a
        second, without retraining, if the model knows one of its features."""
        return self._put(ItemFeatures, "items", item_id, features)

    def delete_item_features(self, item_id: str) -> None:
        """``DELETE /v1/items/{item_id}/features``: the item stops being recommended."""
        self._send("DELETE", f"/v1/items/{_segment(item_id)}/features")

    def _put(self, tp: type[T], kind: str, entity_id: str, features: Mapping[str, float]) -> T:
        response = self._send(
            "PUT", f"/v1/{kind}/{_segment(entity_id)}/features", json={"features": dict(features)}
        )
        return msgspec.json.decode(response.content, type=tp)

    def item_metadata(self, item_id: str) -> StoredMetadata:
        """``GET /v1/items/{item_id}/metadata``: its title and other fields."""
        return self._get(StoredMetadata, f"/v1/items/{_segment(item_id)}/metadata")

    def put_item_metadata(self, item_id: str, metadata: Mapping[str, str]) -> StoredMetadata:
        """``PUT /v1/items/{item_id}/metadata``: replace it (``{}`` removes it)."""
        response = self._send(
            "PUT", f"/v1/items/{_segment(item_id)}/metadata", json={"metadata": dict(metadata)}
        )
        return msgspec.json.decode(response.content, type=StoredMetadata)

    def add_interactions(self, interactions: Iterable[Mapping[str, Any]]) -> Accepted:
        """``POST /v1/interactions``: dicts with ``user_id``, ``item_id`` and optional
        ``weight`` and ``timestamp``. Not retried once sent (it would append twice)."""
        body = {"interactions": [dict(i) for i in interactions]}
        response = self._send("POST", "/v1/interactions", json=body, repeatable=False)
        return msgspec.json.decode(response.content, type=Accepted)

    def seen(self, user_id: str, *, limit: int = 100) -> SeenItems:
        """``GET /v1/users/{user_id}/seen`` (a user's data: needs the token if set)."""
        return self._get(SeenItems, f"/v1/users/{_segment(user_id)}/seen", limit=limit)

    # -- the catalog --------------------------------------------------------------------------

    def search_items(self, q: str, *, limit: int = 20) -> ItemSearch:
        """``GET /v1/items?q=``: items whose id or title contains ``q``."""
        return self._get(ItemSearch, "/v1/items", q=q, limit=limit)

    def item(self, item_id: str) -> ItemStatus:
        """``GET /v1/items/{item_id}``: in the model, in the catalog, recommendable."""
        return self._get(ItemStatus, f"/v1/items/{_segment(item_id)}")

    def vocabulary(self, side: str = "user", *, q: str = "", limit: int = 100) -> Vocabulary:
        """``GET /v1/model/features``: feature names the served model knows."""
        return self._get(Vocabulary, "/v1/model/features", side=side, q=q or None, limit=limit)

    # -- models -------------------------------------------------------------------------------

    def model(self) -> ModelInfo:
        """``GET /v1/model``: the version this worker serves."""
        return self._get(ModelInfo, "/v1/model")

    def models(self, *, limit: int = 100) -> ModelVersions:
        """``GET /v1/models``: the registry's versions, newest first."""
        return self._get(ModelVersions, "/v1/models", limit=limit)

    def reports(self, version: str) -> Reports:
        """``GET /v1/models/{version}/reports``: names of a version's reports."""
        return self._get(Reports, f"/v1/models/{_segment(version)}/reports")

    def report(self, version: str, name: str) -> bytes:
        """``GET /v1/models/{version}/reports/{name}``: the report's bytes."""
        return self._send("GET", f"/v1/models/{_segment(version)}/reports/{_segment(name)}").content

    def promote(self, version: str, *, force: bool = False) -> PointerMove:
        """``POST /v1/admin/models/{version}/promote`` (admin: needs the token if set)."""
        response = self._send(
            "POST", f"/v1/admin/models/{_segment(version)}/promote", params={"force": force}
        )
        return msgspec.json.decode(response.content, type=PointerMove)

    def rollback(self, *, expect: str | None = None) -> PointerMove:
        """``POST /v1/admin/rollback``; with ``expect``, refused (409) unless that is the
        version it would move to."""
        response = self._send("POST", "/v1/admin/rollback", params={"expect": expect})
        return msgspec.json.decode(response.content, type=PointerMove)

    def reload(self, *, force: bool = False) -> Reload:
        """``POST /v1/admin/reload``: load the registry's current version now."""
        response = self._send("POST", "/v1/admin/reload", params={"force": force})
        return msgspec.json.decode(response.content, type=Reload)

    # -- operations ---------------------------------------------------------------------------

    def stats(self, *, minutes: int = 15) -> Stats:
        """``GET /v1/stats``: model, store, reloads, catalog changes, recent traffic."""
        return self._get(Stats, "/v1/stats", minutes=minutes)

    def healthz(self) -> Status:
        """``GET /healthz``: the process answers."""
        return self._get(Status, "/healthz")

    def readyz(self) -> Status:
        """``GET /readyz``: a model is loaded (503, raised, until then)."""
        return self._get(Status, "/readyz")

    def metrics(self) -> str:
        """``GET /metrics``: Prometheus text."""
        return self._send("GET", "/metrics").text

    def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``: the document every method here follows."""
        return msgspec.json.decode(self._send("GET", "/openapi.json").content)

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> Status:
        """Poll ``/readyz`` until a model is served; ``TimeoutError`` after ``timeout``
        seconds, saying what the server last answered."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                response = self._http.get("/readyz")
                if response.status_code == 200:
                    return msgspec.json.decode(response.content, type=Status)
                last = str(_api_error(response))
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self._http.base_url} was not ready after {timeout:g} s (last: {last})"
                )
            time.sleep(interval)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _api_error(response: httpx.Response) -> ApiError:
    try:
        detail = msgspec.json.decode(response.content)["error"]
        return ApiError(response.status_code, str(detail["code"]), str(detail["message"]))
    except (msgspec.DecodeError, KeyError, TypeError):
        text = response.text.strip()[:200] or response.reason_phrase
        return ApiError(response.status_code, f"http_{response.status_code}", text)
