"""Every request and response of the HTTP API, declared once as msgspec ``Struct`` types.

The same declarations validate requests (:func:`decode_body`, :func:`decode_params`) and
make the OpenAPI document (:mod:`hybridrec.serving.openapi`), so the two cannot disagree.
msgspec was chosen over pydantic v2 by measurement: it decodes and validates a
recommendation body 2.5-10x faster than pydantic and faster than ``json.loads`` alone
(``benchmarks/bench_validation.py``).

Rules (each stated in the document too):

- ids and feature names: strings of 1..256 characters (``MAX_ID_LENGTH``);
- ``k``: an integer within ``1..max_k`` (``HYBRIDREC_MAX_K``, default 1000);
- weights: numbers within ``0..WEIGHT_MAX``, the largest finite float32 (training stores
  weights as float32: a larger weight would be infinite there);
- interaction timestamps: unix seconds within ``TIMESTAMP_MIN..TIMESTAMP_MAX`` (the years
  1 to 9999, as a date-time can name them) or an RFC 3339 date-time with its offset;
- item metadata: at most ``MAX_FIELDS`` (64) fields, names of 1..256 characters (not
  blank), text of at most ``MAX_VALUE_LENGTH`` (4096) characters, no NUL in either;
- JSON numbers are numbers: ``10.0`` is the integer 10, as in the document's schema;
- bodies: JSON objects (``Content-Type: application/json``) of at most
  ``HYBRIDREC_MAX_BODY_BYTES`` (1 MiB); unknown fields and unknown query parameters are
  refused, so that a misspelt option never passes silently.

Statuses: a query string or path that breaks a rule is 400 (``invalid_parameter``), a body
that is not JSON is 400 (``invalid_json``), a JSON body that breaks a rule is 422
(``invalid_body``), a too large body 413, a wrong content type 415. Every message names the
field and what it allows.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from ..io.files import MAX_ID_LENGTH, MAX_WEIGHT
from ..store.metadata import MAX_FIELDS, MAX_VALUE_LENGTH

__all__ = [
    "ApiError",
    "FeaturesBody",
    "InteractionsBody",
    "ItemFeaturesParams",
    "ItemMetadataParams",
    "MAX_ID_LENGTH",
    "MAX_LIST",
    "MetadataBody",
    "NoParams",
    "TIMESTAMP_MAX",
    "TIMESTAMP_MIN",
    "WEIGHT_MAX",
    "Declarations",
    "RecommendQuery",
    "ReloadParams",
    "UserFeaturesParams",
    "check_body_size",
    "declarations",
    "decode_body",
    "decode_params",
]

MAX_LIST = 10_000  # ids in one exclude or items list
WEIGHT_MAX = MAX_WEIGHT  # the largest float32: the files' limit too
TIMESTAMP_MIN = -62_135_596_800  # 0001-01-01T00:00:00Z in unix seconds
TIMESTAMP_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z: the years a date-time can name


class ApiError(Exception):
    """A refusal with its HTTP status, machine-readable ``code`` and human ``message``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


# -- field types: constraints and the words that state them -----------------------------------

_ID_TEXT = f"a string of 1..{MAX_ID_LENGTH} characters"
Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH, description=_ID_TEXT)]
IdList = Annotated[
    list[Id],
    Meta(max_length=MAX_LIST, description=f"an array of at most {MAX_LIST} ids, each {_ID_TEXT}"),
]
_QUERY_ID_TEXT = f"{_ID_TEXT} without a comma"
QueryIdList = Annotated[
    list[
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=MAX_ID_LENGTH,
                pattern="^[^,]*$",
                description=_QUERY_ID_TEXT,
            ),
        ]
    ],
    Meta(
        min_length=1,
        max_length=MAX_LIST,
        description=f"comma-separated ids, 1 to {MAX_LIST}, each {_QUERY_ID_TEXT}; "
        "leave the parameter out for none",
    ),
]
"""A list in a query string (``style: form, explode: false``): the value split at every
comma, percent-encoded or not (clients encode them), so an id cannot hold one. An empty
part (``a,,b``, and ``exclude=`` itself) is an empty id and refused, as the body's lists
refuse one: leave the parameter out for no id."""
Weight = Annotated[
    float,
    Meta(
        ge=0,
        le=WEIGHT_MAX,
        description=f"a number within 0..{WEIGHT_MAX:.8g} (finite in float32)",
    ),
]
Features = Annotated[
    dict[Id, Weight],
    Meta(
        description=f"an object of feature name ({_ID_TEXT}) -> weight (a number within "
        f"0..{WEIGHT_MAX:.8g}); names the model does not know are ignored and counted",
        examples=[{"genre:Comedy": 1.0, "tag:pixar": 0.5}],
    ),
]
_NAME_TEXT = f"a string of 1..{MAX_ID_LENGTH} characters, not blank, without NUL"
_TEXT = f"a string of at most {MAX_VALUE_LENGTH} characters, without NUL"
MetadataName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=r"^[^\u0000]*[^\s\u0000][^\u0000]*$",  # not blank, no NUL
        description=_NAME_TEXT,
    ),
]
MetadataText = Annotated[
    str, Meta(max_length=MAX_VALUE_LENGTH, pattern=r"^[^\u0000]*$", description=_TEXT)
]
Metadata = Annotated[
    dict[MetadataName, MetadataText],
    Meta(
        max_length=MAX_FIELDS,
        description=f"an object of at most {MAX_FIELDS} fields, name ({_NAME_TEXT}) -> text "
        f'({_TEXT}); "title" is shown as the item\'s title',
        examples=[{"title": "Toy Story (1995)"}],
    ),
]
"""Item metadata (a title, a link): what a person reads, never a feature. The same rules as
:func:`hybridrec.store.metadata.check_metadata` (NUL: no file format could carry it back)."""
_SECONDS = Annotated[int, Meta(ge=TIMESTAMP_MIN, le=TIMESTAMP_MAX)]
_DATE_TIME = Annotated[dt.datetime, Meta(tz=True, extra_json_schema={"format": "date-time"})]
Timestamp = Annotated[
    _SECONDS | _DATE_TIME,
    Meta(
        description=f"unix seconds within {TIMESTAMP_MIN}..{TIMESTAMP_MAX} (years 1 to 9999), "
        "or an RFC 3339 date-time with its offset, such as 2024-05-01T12:00:00Z"
    ),
]


# -- request bodies ------------------------------------------------------------------------------


class RecommendQuery(Struct, forbid_unknown_fields=True):
    """A recommendation request (the body of ``POST /v1/recommendations``).

    ``features`` replaces the user's stored features for this request; ``items`` restricts
    scoring to those candidates; ``exact`` scores every item exactly (for audits of
    approximate retrieval).
    """

    user_id: Id | None = None
    features: Features | None = None
    k: Annotated[int, Meta(ge=1)] = 10
    exclude: IdList = []
    exclude_seen: bool = True
    exact: bool = False
    items: IdList | None = None


class FeaturesBody(Struct, forbid_unknown_fields=True):
    """The body of a features PUT: the entity's whole feature map (replaces the stored one)."""

    features: Features


class Interaction(Struct, forbid_unknown_fields=True):
    """One interaction: ``user_id`` interacted with ``item_id`` (with ``weight``, default 1,
    at ``timestamp``, default the time the server received it)."""

    user_id: Id
    item_id: Id
    weight: Weight = 1.0
    timestamp: Timestamp | UnsetType = UNSET

    def row(self, now: int) -> tuple[str, str, float, int]:
        """``(user_id, item_id, weight, unix seconds)``; ``now`` when no timestamp was sent."""
        stamp = self.timestamp
        seconds = now if stamp is UNSET else stamp if isinstance(stamp, int) else _seconds(stamp)
        return self.user_id, self.item_id, self.weight, seconds


def _seconds(stamp: dt.datetime) -> int:
    return (stamp - _EPOCH) // dt.timedelta(seconds=1)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class MetadataBody(Struct, forbid_unknown_fields=True):
    """The body of an item metadata PUT: the item's whole metadata (``{}`` removes it)."""

    metadata: Metadata


class InteractionsBody(Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/interactions``."""

    interactions: Annotated[
        list[Interaction],
        Meta(
            min_length=1,
            description="a non-empty array of objects with the fields user_id, item_id, "
            "weight (optional), timestamp (optional)",
        ),
    ]


# -- responses -----------------------------------------------------------------------------------


_TITLE = Meta(description="the item's metadata title, when it has one")
_OTHER = Meta(description="the item's other metadata fields, when it has any")


class ScoredItem(Struct):
    """An item and its score (its meaning: the answer's ``score_type``); ``title`` and
    ``metadata`` when the store holds any."""

    item_id: str
    score: float
    title: Annotated[str, _TITLE] | UnsetType = UNSET
    metadata: Annotated[dict[str, str], _OTHER] | UnsetType = UNSET


class Recommendations(Struct):
    """Top-k items for a user, best first."""

    user_id: str | None
    model_version: str
    strategy: Literal["personalized", "baseline"]
    score_type: Annotated[
        Literal["model", "fold_in", "popularity", "blend"],
        Meta(
            description="what the scores are: model = q_u.q_i + b_u + b_i (a ranking score, "
            "not a probability); fold_in = q_u.q_i + b_i with q_u from the user's items; "
            "popularity = the item's training interactions (weights summed); blend = the "
            "model's score z-scored over the training items plus the item-item score of "
            "the user's history (or the item's popularity) z-scored likewise"
        ),
    ]
    user_case: Literal["known_with_features", "known", "new_with_features", "unknown"]
    retrieval: Annotated[
        Literal["exact", "approximate"],
        Meta(description="how the items were retrieved: every item scored, or an index"),
    ]
    items: list[ScoredItem]
    unscorable: Annotated[
        list[str], Meta(description="requested candidate items the model cannot score")
    ]
    degraded: Annotated[
        bool,
        Meta(
            description="true when the feature store was unreachable and the answer comes "
            "from the model alone"
        ),
    ]


class SimilarItems(Struct):
    """Items nearest to an item in latent space (cosine), best first; ``title`` and
    ``metadata`` are the queried item's, when it has any."""

    item_id: str
    model_version: str
    score_type: Annotated[
        Literal["cosine"], Meta(description="cosine of the two items' latent vectors, -1..1")
    ]
    items: list[ScoredItem]
    title: Annotated[str, _TITLE] | UnsetType = UNSET
    metadata: Annotated[dict[str, str], _OTHER] | UnsetType = UNSET


_UNKNOWN = Meta(
    description="how many of the feature names the served model does not know (ignored in "
    "scoring); absent when no model is loaded"
)


class UserFeatures(Struct):
    """A user's stored features; a PUT also says how many names the model does not know."""

    user_id: str
    features: dict[str, float]
    unknown_features: Annotated[int, _UNKNOWN] | UnsetType = UNSET


class ItemFeatures(Struct):
    """An item's stored features; a PUT also says how many names the model does not know."""

    item_id: str
    features: dict[str, float]
    unknown_features: Annotated[int, _UNKNOWN] | UnsetType = UNSET


class StoredMetadata(Struct):
    """An item's stored metadata."""

    item_id: str
    metadata: dict[str, str]


class Accepted(Struct):
    """How many interactions were appended."""

    accepted: int


class Fallback(Struct):
    """The registry's current version fails to load; this worker serves an older healthy
    version (``model_version``) instead and keeps watching the registry."""

    registry_version: str
    reason: str
    since: Annotated[float, Meta(description="unix seconds")]


class ModelInfo(Struct):
    """The model version this worker serves."""

    model_version: str
    items: int
    snapshot_age_seconds: float
    created_at: str | None = None
    loaded_at: str | UnsetType = UNSET
    overlay_items: int | UnsetType = UNSET
    users: int | UnsetType = UNSET
    components: int | UnsetType = UNSET
    sizes: dict[str, Any] | UnsetType = UNSET
    metrics: dict[str, Any] | UnsetType = UNSET
    store: Literal["ok", "unavailable"] | UnsetType = UNSET
    blas_threads: int | None | UnsetType = UNSET
    fallback: Fallback | None | UnsetType = UNSET
    retrieval: Annotated[
        dict[str, Any] | UnsetType,
        Meta(
            description="how top-k items are found: strategy (exact, bounded, ivf, hnsw), kind "
            "(exact, approximate), the index's recall_at_10 measured against exact scoring, "
            "min_recall, ef, fallback, build_seconds, mapped"
        ),
    ] = UNSET
    blend: Annotated[
        dict[str, Any] | None | UnsetType,
        Meta(
            description="the blend beside the factor model (format, params, file, "
            "covered_items, weights, serving_bytes); null: the factor model alone"
        ),
    ] = UNSET


class Reload(Struct):
    """The version served after a reload, and whether it changed."""

    model_version: str
    reloaded: bool


class Status(Struct):
    """Liveness or readiness."""

    status: str
    model_version: str | UnsetType = UNSET
    store: str | UnsetType = UNSET
    fallback: Fallback | None | UnsetType = UNSET


class ErrorDetail(Struct):
    code: str
    message: str


class Error(Struct):
    """Every refusal: a machine-readable code and a message that says what to change."""

    error: ErrorDetail


# -- path and query parameters (one Struct per operation) -------------------------------------


class NoParams(Struct, forbid_unknown_fields=True):
    """No query parameters (an unknown one is refused)."""


class ReloadParams(Struct, forbid_unknown_fields=True):
    force: Annotated[bool, Meta(description="reload even when the served version is current")] = (
        False
    )


class UserFeaturesParams(Struct, forbid_unknown_fields=True):
    user_id: Id


class ItemFeaturesParams(Struct, forbid_unknown_fields=True):
    item_id: Id


class ItemMetadataParams(Struct, forbid_unknown_fields=True):
    item_id: Id


class Declarations:
    """The declarations that depend on a setting (``k``'s maximum); see :func:`declarations`."""

    def __init__(self, max_k: int):
        k = Annotated[int, Meta(ge=1, le=max_k, description="How many items to return.")]
        self.max_k = max_k
        self.RecommendationRequest = msgspec.defstruct(
            "RecommendationRequest",
            [("k", k, 10)],
            bases=(RecommendQuery,),
            module=__name__,
            namespace={"__doc__": RecommendQuery.__doc__},
            forbid_unknown_fields=True,
        )
        self.UserRecommendationParams = msgspec.defstruct(
            "UserRecommendationParams",
            [
                ("user_id", Id),
                ("k", k, 10),
                ("exclude_seen", Annotated[bool, Meta(description=_EXCLUDE_SEEN)], True),
                ("exclude", Annotated[QueryIdList, Meta(description=_EXCLUDE)], []),
                ("exact", Annotated[bool, Meta(description=_EXACT)], False),
            ],
            module=__name__,
            forbid_unknown_fields=True,
        )
        self.SimilarParams = msgspec.defstruct(
            "SimilarParams",
            [("item_id", Id), ("k", k, 10)],
            module=__name__,
            forbid_unknown_fields=True,
        )
        self.recommendation_request = msgspec.json.Decoder(self.RecommendationRequest)


_EXCLUDE_SEEN = "leave out the items the user interacted with"
_EXCLUDE = (
    "item ids never to return, comma-separated; an id with a comma needs POST /v1/recommendations"
)
_EXACT = "score every item exactly (for audits of approximate retrieval)"


@functools.lru_cache(maxsize=8)
def declarations(max_k: int) -> Declarations:
    """The declarations for ``max_k`` (built once per value)."""
    return Declarations(max_k)


# -- decoding ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _decoder(tp: type) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(tp)


def check_body_size(length: int | None, max_bytes: int) -> None:
    """413 when a body of ``length`` bytes is over ``max_bytes``."""
    if length is not None and length > max_bytes:
        raise ApiError(413, "body_too_large", f"the body is larger than {max_bytes} bytes")


def decode_body(
    tp: type | msgspec.json.Decoder, content_type: str | None, data: bytes, max_bytes: int
) -> Any:
    """The request body as a ``tp`` instance, or an :class:`ApiError` (413, 415, 400, 422).

    ``tp``: a Struct type, or a ``msgspec.json.Decoder`` of one (the hot path keeps its own).
    """
    check_body_size(len(data), max_bytes)
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
    decoder = tp if isinstance(tp, msgspec.json.Decoder) else _decoder(tp)
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        error = exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", _not_json(data, exc)) from None
    if "got `float`" in str(error):  # JSON (and the document) say 10.0 is the integer 10
        try:
            return msgspec.convert(_integral(json.loads(data)), decoder.type)
        except msgspec.ValidationError as exc:
            error = exc
    raise ApiError(422, "invalid_body", _explain(str(error), decoder.type, data))


def _integral(value: Any) -> Any:
    """``value`` with every float that is a whole number made an int (10.0 -> 10)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


def _not_json(data: bytes, exc: Exception) -> str:
    """Why ``data`` is not JSON, in the words of the stdlib parser (it says where)."""

    def constant(name: str) -> float:
        raise ValueError(f"{name} is not valid JSON; numbers must be finite")

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"the body is not UTF-8 (byte {err.start})"
    try:
        json.loads(text, parse_constant=constant)
    except RecursionError:
        return "the body is not valid JSON: nested too deeply"
    except ValueError as err:
        return f"the body is not valid JSON: {err}"
    if _SURROGATE.search(text):  # the stdlib accepts them; msgspec (rightly) does not
        return (
            "the body is not valid JSON: a string holds an unpaired UTF-16 surrogate escape "
            "(such as \\ud800), which is not Unicode"
        )
    return f"the body is not valid JSON: {exc}"


_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_QUERY_FIELDS: dict[type, dict[str, Any]] = {}


def _query_fields(tp: type) -> dict[str, Any]:
    """``{name: coercion of a query string, or None}`` for the fields of ``tp``."""
    out = _QUERY_FIELDS.get(tp)
    if out is None:
        out = {}
        for field in msgspec.structs.fields(tp):
            base = _strip(field.type)
            if base is int:
                out[field.name] = _query_int
            elif base is bool:
                out[field.name] = _query_bool
            elif typing.get_origin(base) is list:
                out[field.name] = _query_list
            else:
                out[field.name] = None
        _QUERY_FIELDS[tp] = out
    return out


_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def _query_int(text: str) -> int | str:
    """ASCII digits with an optional sign; anything else stays text (and is refused)."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    return int(text) if digits.isdigit() and digits.isascii() else text


def _query_bool(text: str) -> bool | str:
    return _BOOLS.get(text.lower(), text)


def _query_list(text: str) -> list[str]:
    """Comma-separated values (OpenAPI ``style: form, explode: false``); an empty part
    (``""`` too: it cannot be told from ``[""]``) is an empty value, which the declaration
    refuses."""
    return text.split(",")


def decode_params(tp: type, path: Mapping[str, str], query: Mapping[str, str]) -> Any:
    """Path and query parameters as a ``tp`` instance, or a 400 :class:`ApiError`.

    Query values are text: integers are ASCII digits, booleans true/false/1/0 (any case),
    lists comma-separated. Unknown query parameters are refused. ``query`` may be a
    werkzeug ``MultiDict``: the first value of a repeated name counts.
    """
    fields = _query_fields(tp)
    values: dict[str, Any] = dict(path)
    if query:
        for name, text in query.items():
            if name not in fields or name in path:
                raise ApiError(
                    400,
                    "invalid_parameter",
                    f"unknown query parameter {name[:64]!r}; allowed: "
                    + (", ".join(n for n in fields if n not in path) or "none"),
                )
            coerce = fields[name]
            values[name] = coerce(text) if coerce is not None else text
    try:
        return msgspec.convert(values, tp)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_parameter", _explain(str(exc), tp, values, "")) from None


# -- messages ------------------------------------------------------------------------------------

_AT = re.compile(r"^(?P<reason>.*?)(?: - at (?P<key>`key` in )?`(?P<path>[^`]*)`)?$", re.S)
_GOT = re.compile(r"got `(\w+)`")
_UNKNOWN_VALUE = object()
_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\.\.\.)\]")


def _explain(message: str, tp: Any, raw: Any, top: str = "the body") -> str:
    """msgspec's ``message`` about ``raw`` (a body's bytes or a dict of parameters) decoded
    as ``tp``, rewritten to name the field and state what it allows."""
    match = _AT.match(message)
    reason, path, is_key = match["reason"], match["path"] or "$", bool(match["key"])
    if isinstance(raw, bytes):
        try:
            raw = json.loads(raw)  # the stdlib keeps what msgspec refuses (1e999 -> inf)
        except (ValueError, RecursionError):
            raw = _UNKNOWN_VALUE
    where, annotation, value = top, tp, raw
    for name, index in _SEGMENT.findall(path[1:]):
        annotation = _child(annotation, name, index)
        if name:
            where = f"{where}.{name}" if where and where != top else name
            value = value.get(name) if isinstance(value, dict) else _UNKNOWN_VALUE
        elif index == "...":  # a dict value: find the offending key
            key = _first_bad(value, _key_type(annotation) if is_key else annotation, is_key)
            where = f"{where}[{json.dumps(key)}]" if key is not None else f"a value in {where}"
            value = value.get(key) if isinstance(value, dict) else _UNKNOWN_VALUE
        else:
            where = f"{where}[{index}]"
            n = int(index)
            value = value[n] if isinstance(value, list) and n < len(value) else _UNKNOWN_VALUE
    if is_key:
        key = _first_bad(value, _key_type(annotation), True)
        return f"a key of {where} must be {_describe(_key_type(annotation))}, not {_show(key)}"
    if reason.startswith("Object contains unknown field"):
        name = reason.split("`")[1]
        return f"unknown field {name[:64]!r} in {where}; allowed: " + ", ".join(
            f.name for f in msgspec.structs.fields(_struct(annotation))
        )
    if reason.startswith("Object missing required field"):
        name = reason.split("`")[1]
        return f"{where} needs {name!r}: {_describe(_child(annotation, name, ''))}"
    if reason.startswith(("Expected", "Invalid", "Number out of range")):
        got = _GOT.search(reason)
        if value is _UNKNOWN_VALUE:
            shown = f", not {_ARTICLES.get(got[1], got[1])}" if got else ""
        else:
            shown = f", not {_show(value)}"
        return f"{where} must be {_describe(annotation)}{shown}"
    return f"{where}: {reason}"  # a rule of the declaration itself (__post_init__)


def _strip(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` and ``| None`` / ``| UnsetType``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a not in (type(None), UnsetType)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _struct(annotation: Any) -> Any:
    base = _strip(annotation)
    if typing.get_origin(base) in (Union, types.UnionType):
        structs = [a for a in typing.get_args(base) if _is_struct(a)]
        return structs[0] if structs else base
    return base


def _child(annotation: Any, name: str, index: str) -> Any:
    base = _struct(annotation)
    if name:
        for field in msgspec.structs.fields(base):
            if field.name == name:
                return field.type
        return Any
    args = typing.get_args(base)
    return args[-1] if args else Any  # list[X] -> X, dict[K, V] -> V


def _key_type(annotation: Any) -> Any:
    args = typing.get_args(_strip(annotation))
    return args[0] if args else Any


def _first_bad(mapping: Any, annotation: Any, keys: bool) -> Any:
    if not isinstance(mapping, dict):
        return None
    for key, value in mapping.items():
        try:
            msgspec.convert(key if keys else value, annotation)
        except msgspec.ValidationError:
            return key
    return None


def _describe(annotation: Any) -> str:
    """What ``annotation`` allows, in words (its ``Meta.description`` when it has one)."""
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            base, *metas = typing.get_args(annotation)
            for meta in metas:
                text = meta.description if isinstance(meta, Meta) else None
                if text and text.startswith(_STATES_A_RULE) and not _is_struct(base):
                    return f"{text} or null" if nullable else text
            constraints = [m for m in metas if isinstance(m, Meta)]
            annotation = base
            if constraints and base in (int, float):
                m = constraints[0]
                kind = "an integer" if base is int else "a number"
                if m.ge is not None and m.le is not None:
                    return f"{kind} within {m.ge}..{m.le}"
                if m.ge is not None:
                    return f"{kind} >= {m.ge}"
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not UnsetType]
            nullable = nullable or type(None) in args
            args = [a for a in args if a is not type(None)]
            if len(args) != 1:
                text = " or ".join(_describe(a) for a in args)
                return f"{text} or null" if nullable else text
            annotation = args[0]
        else:
            break
    simple = {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        dt.datetime: "an RFC 3339 date-time",
    }
    if annotation in simple:
        text = simple[annotation]
    elif typing.get_origin(annotation) is Literal:
        text = "one of " + ", ".join(json.dumps(a) for a in typing.get_args(annotation))
    elif typing.get_origin(annotation) is list:
        item = _strip(typing.get_args(annotation)[0])
        if _is_struct(item):
            names = ", ".join(f.name for f in msgspec.structs.fields(item))
            text = f"an array of objects with the fields {names}"
        else:
            text = f"an array of {_describe(item)}"
    elif typing.get_origin(annotation) is dict:
        text = "an object"
    elif _is_struct(annotation):
        names = ", ".join(f.name for f in msgspec.structs.fields(annotation))
        text = f"an object with the fields {names}"
    else:
        text = "a valid value"
    return f"{text} or null" if nullable else text


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Struct)


_STATES_A_RULE = ("a ", "an ", "unix ")  # descriptions that read as "must be ..."


_ARTICLES = {"array": "an array", "object": "an object", "null": "null"}


def _show(value: Any) -> str:
    """``value`` as it was sent, short."""
    if isinstance(value, str) and len(value) > 64:
        return f"a string of {len(value)} characters"
    if isinstance(value, dict):
        return "an object" if value else "an empty object"
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- the operator's endpoints (models, reports, a user's seen items, the vocabulary, item
# search and status, traffic): what the web console shows; handlers in :mod:`.operate` ------

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
Version = Annotated[
    str,
    Meta(
        pattern=_NAME_PATTERN,
        description="a model version: letters, digits, '.', '_' and '-', at most 128 "
        "characters, not starting with '.' (as `hybridrec models list` shows them)",
    ),
]
ReportName = Annotated[
    str,
    Meta(
        pattern=_NAME_PATTERN,
        description="a report name such as report.json or report.png",
    ),
]
ModelStatus = Literal["candidate", "published", "refused", "rolled_back"]


class ModelVersion(Struct):
    """One version in the registry: its status, metrics, what it was trained on, reports.

    ``status``: ``published`` (served now or earlier), ``candidate`` (stored, never
    served), ``refused`` (the quality gate said no; promote with ``force``),
    ``rolled_back`` (served, then rolled back).
    """

    version: str
    status: ModelStatus
    current: Annotated[bool, Meta(description="the registry's pointer is on this version")]
    recorded_at: Annotated[float, Meta(description="unix seconds when first recorded")]
    created_at: str | None = None
    published_at: float | None = None
    metrics: dict[str, Any] = {}
    sizes: dict[str, Any] = {}
    hyperparameters: dict[str, Any] = {}
    training_data: Annotated[
        dict[str, Any] | None,
        Meta(
            description="what the model was trained on (interactions, users, items, time "
            "range, log position) when its manifest records it"
        ),
    ] = None
    reasons: Annotated[list[str], Meta(description="the quality gate's reasons")] = []
    reports: Annotated[list[str], Meta(description="names of its reports")] = []
    artifact: Annotated[
        Literal["ok", "missing"],
        Meta(description="whether the model store holds the version's artifact"),
    ] = "ok"


class ModelVersions(Struct):
    """The registry's versions, newest first, and where a rollback would go."""

    current: str | None
    serving: Annotated[str | None, Meta(description="the version this worker serves")]
    rollback_target: Annotated[
        str | None, Meta(description="the version POST /v1/admin/rollback moves to")
    ]
    total: int
    versions: list[ModelVersion]


class Reports(Struct):
    """The reports written beside a version (a retraining cycle writes report.json and
    report.png)."""

    version: str
    reports: list[str]


class PointerMove(Struct):
    """The registry's pointer after a promote or a rollback, and what this worker serves
    (every worker follows within HYBRIDREC_RELOAD_INTERVAL seconds)."""

    model_version: str
    previous: str | None
    serving: str | None
    reload_error: str | None = None


class SeenItem(Struct):
    """An item a user interacted with; ``title`` and ``metadata`` when the store has any."""

    item_id: str
    title: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET


class SeenItems(Struct):
    """Items a user interacted with (their seen set), sorted by id, at most ``limit``."""

    user_id: str
    count: Annotated[int, Meta(description="how many items the user has seen in all")]
    items: list[SeenItem]


class Vocabulary(Struct):
    """Feature names the served model knows on one side, sorted, at most ``limit``."""

    model_version: str
    side: Literal["user", "item"]
    total: Annotated[int, Meta(description="names in the vocabulary")]
    matched: Annotated[int, Meta(description="names that contain the query")]
    features: list[str]


class ItemSummary(Struct):
    """An item found by a search."""

    item_id: str
    in_model: Annotated[bool, Meta(description="the served model was trained with it")]
    recommendable: Annotated[bool, Meta(description="this worker can recommend it now")]
    title: str | UnsetType = UNSET


class ItemSearch(Struct):
    """Items whose id (or title) contains the query, case-insensitive: an exact id first,
    then ids that start with it, then the rest, shortest first."""

    query: str
    items: list[ItemSummary]
    truncated: Annotated[bool, Meta(description="more items matched than limit")]


class ItemStatus(Struct):
    """What the service knows of one item: is it in the model, in the catalog,
    recommendable now, and which of its stored features the model can use."""

    item_id: str
    model_version: str
    in_model: bool
    in_catalog: Annotated[bool, Meta(description="the feature store holds the item")]
    recommendable: bool
    features: Annotated[
        dict[str, float] | None, Meta(description="stored features; null when not stored")
    ]
    known_features: Annotated[int, Meta(description="stored names the model knows")]
    unknown_features: Annotated[int, Meta(description="stored names the model ignores")]
    title: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET


class TrafficPoint(Struct):
    """Traffic over one sampling interval ending at ``t`` (unix seconds), all workers."""

    t: float
    requests_per_second: float
    client_errors_per_second: Annotated[float, Meta(description="4xx answers")]
    server_errors_per_second: Annotated[float, Meta(description="5xx answers")]
    p50_ms: Annotated[
        float | None,
        Meta(description="median latency of recommendation and similar-item requests"),
    ]
    p99_ms: float | None


class WorkerState(Struct):
    """One worker as its gauges report it."""

    pid: int | None
    model_version: str | None
    catalog_items: int | None
    snapshot_age_seconds: float | None
    degraded: bool


class CatalogChanges(Struct):
    """The served catalog against the model's training catalog (this worker)."""

    model_items: Annotated[int, Meta(description="items the model was trained with")]
    recommendable: int
    added: Annotated[int, Meta(description="items put since training, unknown to the model")]
    changed: Annotated[int, Meta(description="model items served with new features")]
    unavailable: Annotated[
        int, Meta(description="model items not recommendable now (deleted, or no features)")
    ]
    updates: Annotated[
        dict[str, int], Meta(description="catalog changes applied, by operation, all workers")
    ]


class Stats(Struct):
    """The service at a glance: model, store, reloads, catalog changes and recent
    traffic (request rate and latency, sampled every ``interval_seconds`` by each worker
    from the metrics of every worker)."""

    model_version: str | None
    registry_version: Annotated[
        str | None, Meta(description="the registry's current version; null when unreadable")
    ]
    store: Literal["ok", "unavailable"]
    degraded: Annotated[bool, Meta(description="this worker answers without the store")]
    reload_failures: Annotated[int, Meta(description="failed model loads, all workers")]
    reloads: Annotated[int, Meta(description="successful model loads, all workers")]
    interval_seconds: float
    catalog: CatalogChanges | None
    workers: list[WorkerState]
    traffic: list[TrafficPoint]


class ModelsParams(Struct, forbid_unknown_fields=True):
    limit: Annotated[int, Meta(ge=1, le=1000, description="newest versions to list (1..1000)")] = (
        100
    )


class ReportsParams(Struct, forbid_unknown_fields=True):
    version: Version


class ReportParams(Struct, forbid_unknown_fields=True):
    version: Version
    name: ReportName


class PromoteParams(Struct, forbid_unknown_fields=True):
    version: Version
    force: Annotated[bool, Meta(description="promote a version the quality gate refused")] = False


class RollbackParams(Struct, forbid_unknown_fields=True):
    expect: Annotated[
        Version | None,
        Meta(
            description="the version you expect to roll back to (rollback_target of GET "
            "/v1/models): refused with 409 if the registry moved meanwhile"
        ),
    ] = None


class SeenParams(Struct, forbid_unknown_fields=True):
    user_id: Id
    limit: Annotated[int, Meta(ge=1, le=MAX_LIST, description="items to list")] = 100


class VocabularyParams(Struct, forbid_unknown_fields=True):
    side: Annotated[Literal["user", "item"], Meta(description="user or item features")] = "user"
    q: Annotated[
        str, Meta(max_length=MAX_ID_LENGTH, description="only names that contain this")
    ] = ""
    limit: Annotated[int, Meta(ge=1, le=MAX_LIST, description="names to list")] = 100


class ItemSearchParams(Struct, forbid_unknown_fields=True):
    q: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=MAX_ID_LENGTH,
            description="text an item's id or title contains (case-insensitive)",
        ),
    ]
    limit: Annotated[int, Meta(ge=1, le=100, description="items to return")] = 20


class StatsParams(Struct, forbid_unknown_fields=True):
    minutes: Annotated[
        int, Meta(ge=1, le=60, description="how many minutes of traffic to return")
    ] = 15


class ConsoleAssetParams(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(max_length=64, description="a file of the console")]
