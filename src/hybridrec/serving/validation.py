"""Input rules of the HTTP API, as pure functions that raise :class:`ApiError`.

- ids and feature names: non-empty strings of at most 256 characters (``MAX_ID_LENGTH``);
- ``k``: an integer within ``1..max_k`` (``HYBRIDREC_MAX_K``, default 1000);
- feature and interaction weights: finite numbers, not negative;
- bodies: JSON objects (``Content-Type: application/json``) of at most
  ``HYBRIDREC_MAX_BODY_BYTES`` (1 MiB); ``NaN``/``Infinity`` literals are refused;
  unknown fields are refused, so that a misspelt option never passes silently.

Statuses: query string and path problems are 400, a body that is not JSON is 400, a JSON
body that breaks a rule is 422, a too large body 413, a wrong content type 415.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..io.files import MAX_ID_LENGTH

__all__ = [
    "ApiError",
    "MAX_ID_LENGTH",
    "RecommendQuery",
    "parse_bool",
    "parse_id",
    "parse_id_list",
    "parse_interactions",
    "parse_json",
    "parse_k",
    "parse_features_body",
    "parse_recommend_body",
]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
MAX_LIST = 10_000  # ids in one exclude or items list


class ApiError(Exception):
    """A refusal with its HTTP status, machine-readable ``code`` and human ``message``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _query_error(message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", message)


def _body_error(message: str) -> ApiError:
    return ApiError(422, "invalid_body", message)


def _check_text(value: object, what: str, error) -> str:
    if not isinstance(value, str):
        raise error(f"{what} must be a string, not {_json_type(value)}")
    if not value:
        raise error(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise error(f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{what} is not valid Unicode (lone surrogate)") from None
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# -- query string and path ------------------------------------------------------------------


def parse_id(value: str, what: str = "id") -> str:
    """A path or query id (400 when empty or longer than 256 characters)."""
    return _check_text(value, what, _query_error)


def parse_k(raw: str | None, max_k: int, default: int = 10) -> int:
    """``k`` from the query string: an integer within ``1..max_k``."""
    if raw is None:
        return default
    text = raw.strip()
    if not (text.isascii() and text.lstrip("+").isdigit()):
        raise _query_error(f"k must be an integer within 1..{max_k}, not {raw[:32]!r}")
    k = int(text)
    if not 1 <= k <= max_k:
        raise _query_error(f"k must be within 1..{max_k}, not {k}")
    return k


def parse_bool(raw: str | None, what: str, default: bool) -> bool:
    """A query flag: true/false, 1/0, yes/no, on/off (any case)."""
    if raw is None:
        return default
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _query_error(f"{what} must be true or false, not {raw[:32]!r}")


def parse_id_list(raw: str | None, what: str) -> list[str]:
    """Comma-separated ids from the query string (empty entries are skipped)."""
    if raw is None or raw == "":
        return []
    ids = [part for part in raw.split(",") if part != ""]
    if len(ids) > MAX_LIST:
        raise _query_error(f"{what} lists {len(ids)} ids; the limit is {MAX_LIST}")
    return [_check_text(i, f"an id in {what}", _query_error) for i in ids]


# -- bodies ---------------------------------------------------------------------------------


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON; weights must be finite numbers")


def parse_json(content_type: str | None, data: bytes, max_bytes: int) -> dict[str, Any]:
    """The JSON object of a request body, or an :class:`ApiError` (413, 415, 400, 422)."""
    if len(data) > max_bytes:
        raise ApiError(413, "body_too_large", f"the body is larger than {max_bytes} bytes")
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    if mimetype != "application/json" and not (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    ):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as JSON with 'Content-Type: application/json', "
            f"not {content_type or 'no content type'!r}",
        )
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "the body is not UTF-8") from None
    except ValueError as exc:  # JSONDecodeError and the constants above
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise _body_error(f"the body must be a JSON object, not {_json_type(body)}")
    return body


def _only(body: Mapping[str, Any], allowed: tuple[str, ...], where: str = "the body") -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _body_error(
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"in {where}; allowed: {', '.join(allowed)}"
        )


def _weight(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _body_error(f"{what} must be a number, not {_json_type(value)}")
    try:
        w = float(value)
    except OverflowError:
        raise _body_error(f"{what} is too large") from None
    if not math.isfinite(w):
        raise _body_error(f"{what} must be a finite number")
    if w < 0:
        raise _body_error(f"{what} must not be negative, not {w}")
    return w


def parse_features(value: object, what: str = "features") -> dict[str, float]:
    """``{name: weight}`` with names as ids and finite, non-negative weights."""
    if not isinstance(value, dict):
        raise _body_error(f"{what} must be an object of feature name -> weight")
    return {
        _check_text(name, f"a feature name in {what}", _body_error): _weight(
            weight, f"the weight of feature {name[:64]!r}"
        )
        for name, weight in value.items()
    }


def parse_features_body(body: Mapping[str, Any]) -> dict[str, float]:
    """The ``features`` of a PUT body ``{"features": {name: weight}}``."""
    _only(body, ("features",))
    if "features" not in body:
        raise _body_error('the body needs "features": {name: weight}')
    return parse_features(body["features"])


def _id_list(value: object, what: str) -> list[str]:
    if not isinstance(value, list):
        raise _body_error(f"{what} must be an array of ids, not {_json_type(value)}")
    if len(value) > MAX_LIST:
        raise _body_error(f"{what} lists {len(value)} ids; the limit is {MAX_LIST}")
    return [_check_text(i, f"an id in {what}", _body_error) for i in value]


@dataclass(frozen=True)
class RecommendQuery:
    """A recommendation request after validation."""

    user_id: str | None
    features: dict[str, float] | None  # None: the user's stored features
    k: int
    exclude: list[str]
    exclude_seen: bool
    items: list[str] | None
    exact: bool = False  # score every item, even when an index serves


_RECOMMEND_FIELDS = ("user_id", "features", "k", "exclude", "exclude_seen", "items", "exact")


def parse_recommend_body(body: Mapping[str, Any], max_k: int) -> RecommendQuery:
    """The body of ``POST /v1/recommendations``."""
    _only(body, _RECOMMEND_FIELDS)
    user_id = body.get("user_id")
    if user_id is not None:
        user_id = _check_text(user_id, "user_id", _body_error)
    features = body.get("features")
    if features is not None:
        features = parse_features(features)
    k = body.get("k", 10)
    if isinstance(k, float) and k.is_integer():  # JSON does not tell 10 from 10.0
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int):
        raise _body_error(f"k must be an integer within 1..{max_k}, not {_json_type(k)}")
    if not 1 <= k <= max_k:
        raise _body_error(f"k must be within 1..{max_k}, not {k}")
    exclude = _id_list(body.get("exclude") or [], "exclude")
    exclude_seen = body.get("exclude_seen", True)
    if not isinstance(exclude_seen, bool):
        raise _body_error(f"exclude_seen must be true or false, not {_json_type(exclude_seen)}")
    items = body.get("items")
    if items is not None:
        items = _id_list(items, "items")
    exact = body.get("exact", False)
    if not isinstance(exact, bool):
        raise _body_error(f"exact must be true or false, not {_json_type(exact)}")
    return RecommendQuery(user_id, features, k, exclude, exclude_seen, items, exact)


_INTERACTION_FIELDS = ("user_id", "item_id", "weight", "timestamp")


def _timestamp(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise _body_error(f"{what} must be unix seconds or an ISO-8601 string")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, float):
        if not math.isfinite(value) or abs(value) >= 2**63:
            raise _body_error(f"{what} must be a finite number of seconds within int64")
        seconds = int(value)
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _body_error(f"{what} {value[:64]!r} is not ISO-8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)  # naive means UTC, as in files
        try:
            seconds = int(parsed.timestamp())
        except (OverflowError, OSError, ValueError):
            raise _body_error(f"{what} {value[:64]!r} is out of range") from None
    else:
        raise _body_error(f"{what} must be unix seconds or an ISO-8601 string")
    if not -(2**63) <= seconds < 2**63:  # int64, as the interaction files allow
        raise _body_error(f"{what} is out of range")
    return seconds


def parse_interactions(body: Mapping[str, Any], now: int) -> list[tuple[str, str, float, int]]:
    """``(user_id, item_id, weight, timestamp)`` rows of ``POST /v1/interactions``."""
    _only(body, ("interactions",))
    rows = body.get("interactions")
    if not isinstance(rows, list) or not rows:
        raise _body_error('the body needs "interactions": a non-empty array')
    out = []
    for n, row in enumerate(rows):
        where = f"interactions[{n}]"
        if not isinstance(row, dict):
            raise _body_error(f"{where} must be an object")
        _only(row, _INTERACTION_FIELDS, where)
        for name in ("user_id", "item_id"):
            if name not in row:
                raise _body_error(f"{where} needs {name!r}")
        user_id = _check_text(row["user_id"], f"{where}.user_id", _body_error)
        item_id = _check_text(row["item_id"], f"{where}.item_id", _body_error)
        weight = _weight(row.get("weight", 1.0), f"{where}.weight")
        stamp = row.get("timestamp")
        when = now if stamp is None else _timestamp(stamp, f"{where}.timestamp")
        out.append((user_id, item_id, weight, when))
    return out
