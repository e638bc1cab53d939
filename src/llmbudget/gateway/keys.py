"""Virtual keys: the secrets clients put in ``Authorization: Bearer sk-llmb-...``.

A key belongs to a user (and optionally a team and an org), may be limited to some
models, carries its own budget and per-model budgets, may expire and may be revoked.

Storage: only the SHA-256 of a secret is kept, as a store *document* (kind ``gw-key``),
so every backend holds keys and a leaked database leaks no usable secret. A key's public
id is ``key_`` + the first 16 hex digits of that hash, and the document is stored under
the id: resolving a presented secret is one hash and one lookup by an id derived from it,
followed by :func:`hmac.compare_digest` of the full hash. The lookup takes the same path
whether or not the key exists, so its timing says nothing about which keys exist, and the
id (64 bits of a hash of a 256-bit secret) helps no one guess a secret.

Resolved keys are cached for ``key_cache_ttl`` seconds (default 10), misses included so a
flood of bad keys cannot hammer the store. Revoking or editing a key through this process
drops it from this process's cache at once; *other replicas* see a revocation within
``key_cache_ttl`` seconds. Expiry is checked against the clock on every request.

>>> import asyncio
>>> from llmbudget.stores.memory import MemoryStore
>>> keys = KeyManager(MemoryStore())
>>> key, secret = asyncio.run(keys.create({"user": "alice", "budget": 5, "period": "daily"}))
>>> secret.startswith("sk-llmb-"), asyncio.run(keys.authenticate(secret)).user
(True, 'alice')
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmbudget import operations as ops
from llmbudget.clock import Clock, system_clock
from llmbudget.errors import InvalidInputError
from llmbudget.gateway.config import BudgetSpec, parse_model_budgets, parse_models
from llmbudget.gateway.errors import GatewayError
from llmbudget.gateway.rate_limits import RATE_LIMIT_FIELDS, RateLimits
from llmbudget.stores.base import AsyncStore, Store

if TYPE_CHECKING:
    from llmbudget.gateway.entities import EntityDirectory

__all__ = ["KEY_DOC_KIND", "SECRET_PREFIX", "KeyManager", "VirtualKey", "hash_secret", "key_id"]

KEY_DOC_KIND = "gw-key"
SECRET_PREFIX = "sk-llmb-"
MASTER_KEY_ID = "master"
_CACHE_MAX = 100_000
_FIELDS = frozenset(
    {
        "user", "team", "org", "name", "models", "budget", "max_budget", "period",
        "budget_duration", "timezone", "rolling", "model_budgets", "expires_at", "duration",
        "metadata", *RATE_LIMIT_FIELDS,
    }
)  # fmt: skip
_PATCHABLE = _FIELDS - {"user"}
_DURATION_RE = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of a secret: what the store keeps instead of the secret.

    A fast hash is right here (unlike for passwords): the secrets are 256 random bits,
    so there is nothing to brute-force, and it runs on every request.
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def key_id(secret_hash: str) -> str:
    """The public id of the key with this hash (``key_`` + 16 hex digits)."""
    return "key_" + secret_hash[:16]


@dataclass(frozen=True, slots=True)
class VirtualKey:
    """A virtual key as stored (never its secret). ``source`` is ``api``, ``config`` or ``master``."""

    id: str
    user: str
    secret_hash: str = field(repr=False)
    team: str | None = None
    org: str | None = None
    name: str | None = None
    models: frozenset[str] | None = None
    budget: BudgetSpec | None = None
    model_budgets: Mapping[str, BudgetSpec] = field(default_factory=dict)
    expires_at: float | None = None
    revoked: bool = False
    revoked_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: str = "api"
    limits: RateLimits = field(default_factory=RateLimits)

    def problem(self, now: float) -> str | None:
        """Why the key cannot be used now (``None``: it can)."""
        if self.revoked:
            return "this API key has been revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "this API key has expired"
        return None

    def public(self) -> dict[str, Any]:
        """JSON-friendly view for the admin API: everything but the secret and its hash."""
        return {
            "id": self.id,
            "object": "virtual_key",
            "name": self.name,
            "user": self.user,
            "team": self.team,
            "org": self.org,
            "models": None if self.models is None else sorted(self.models),
            "budget": None if self.budget is None else self.budget.to_dict(),
            "model_budgets": {m: s.to_dict() for m, s in sorted(self.model_budgets.items())},
            "expires_at": _iso(self.expires_at),
            "revoked": self.revoked,
            "revoked_at": _iso(self.revoked_at),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "metadata": dict(self.metadata),
            **{name: getattr(self.limits, name) for name in RATE_LIMIT_FIELDS},
            "source": self.source,
        }

    def to_doc(self) -> dict[str, Any]:
        doc = self.public()
        doc["secret_hash"] = self.secret_hash
        doc["expires_at"] = self.expires_at
        doc["revoked_at"] = self.revoked_at
        doc["created_at"] = self.created_at
        doc["updated_at"] = self.updated_at
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> VirtualKey:
        budget = doc.get("budget")
        return cls(
            id=str(doc["id"]),
            user=str(doc["user"]),
            secret_hash=str(doc["secret_hash"]),
            team=doc.get("team"),
            org=doc.get("org"),
            name=doc.get("name"),
            models=parse_models(doc.get("models"), "key"),
            budget=BudgetSpec.parse(budget, "key") if budget else None,
            model_budgets=parse_model_budgets(doc.get("model_budgets"), "key"),
            expires_at=doc.get("expires_at"),
            revoked=bool(doc.get("revoked")),
            revoked_at=doc.get("revoked_at"),
            created_at=float(doc.get("created_at") or 0.0),
            updated_at=float(doc.get("updated_at") or 0.0),
            metadata=dict(doc.get("metadata") or {}),
            source=str(doc.get("source") or "api"),
            limits=RateLimits.parse(doc, "key"),
        )


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()


class KeyManager:
    """Create, find, edit and revoke virtual keys; authenticate presented secrets.

    ``static`` are keys from the config file (``keys:``): usable, listed, but read-only.
    ``master_key``, when presented on a proxy endpoint, acts as an unrestricted key with
    id ``master`` (its spend still counts against global, model and deployment budgets).
    ``parents``, when set, is where a key's ``team`` and ``org`` must exist: a key naming a
    team nobody created is refused (400), since its spend would count against no team.
    """

    def __init__(
        self,
        store: Store | AsyncStore,
        *,
        clock: Clock = system_clock,
        ttl: float = 10.0,
        static: tuple[Mapping[str, Any], ...] = (),
        master_key: str | None = None,
        parents: EntityDirectory | None = None,
    ) -> None:
        self.store = store
        self.parents = parents
        self.clock = clock
        self.ttl = ttl
        self._cache: dict[str, tuple[float, VirtualKey | None]] = {}
        self._static: dict[str, VirtualKey] = {}
        for i, entry in enumerate(static):
            key = _static_key(entry, i)
            self._static[key.secret_hash] = key
        self._static_ids = {k.id: k for k in self._static.values()}
        self._master_hash = hash_secret(master_key) if master_key else None
        self._master = (
            VirtualKey(MASTER_KEY_ID, MASTER_KEY_ID, self._master_hash, source="master")
            if self._master_hash
            else None
        )

    # -- hot path ------------------------------------------------------------------------

    async def authenticate(self, secret: str | None) -> VirtualKey:
        """The usable key for ``secret``, or a 401 :class:`GatewayError` saying why not."""
        if not secret:
            raise GatewayError(
                401,
                "missing_api_key",
                "no API key: send 'Authorization: Bearer sk-llmb-...'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hash_secret(secret)
        key = await self._resolve(digest)
        if key is None:
            raise GatewayError(401, "invalid_api_key", "invalid API key")
        problem = key.problem(self.clock())
        if problem is not None:
            raise GatewayError(401, "invalid_api_key", problem)
        return key

    async def _resolve(self, digest: str) -> VirtualKey | None:
        now = self.clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        master_hash = self._master_hash
        key: VirtualKey | None
        if (
            digest not in self._static
            and master_hash is not None
            and hmac.compare_digest(digest, master_hash)
        ):
            key = self._master
        else:
            key = await self._stored(digest)
        if self.ttl > 0:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()  # bounded: a flood of random keys cannot grow memory
            self._cache[digest] = (now + self.ttl, key)
        return key

    def invalidate(self, key: VirtualKey) -> None:
        """Forget a key in this process's cache (after revoke or edit)."""
        self._cache.pop(key.secret_hash, None)

    # -- admin ---------------------------------------------------------------------------

    async def create(self, fields: Mapping[str, Any]) -> tuple[VirtualKey, str]:
        """Make a key from admin-API fields; returns it and its secret (shown only once)."""
        _check_fields(fields, _FIELDS)
        user = fields.get("user")
        if not isinstance(user, str) or not user:
            raise InvalidInputError("user is required: every key belongs to a user")
        now = self.clock()
        for _ in range(5):
            secret = SECRET_PREFIX + secrets.token_urlsafe(32)
            digest = hash_secret(secret)
            key = _apply(
                VirtualKey(key_id(digest), user, digest, created_at=now, updated_at=now),
                fields,
                now,
            )
            await self._check_parents(key, fields)
            if await ops.CreateDoc(self.store, KEY_DOC_KIND, key.id, key.to_doc()).arun():
                # A cached miss for this digest is impossible (fresh secret), but be exact.
                self._cache.pop(digest, None)
                return key, secret
        raise InvalidInputError("could not allocate a unique key id")  # 2^-64 odds, five times

    async def get(self, id_: str) -> VirtualKey | None:
        static = self._static_ids.get(id_)
        if static is not None:
            return static
        doc = await ops.GetDoc(self.store, KEY_DOC_KIND, id_).arun()
        return None if doc is None else VirtualKey.from_doc(doc)

    async def by_secret(self, secret: str) -> VirtualKey | None:
        """The key (config or API, revoked or not) whose secret this is; never the master."""
        return await self._stored(hash_secret(secret))

    async def _stored(self, digest: str) -> VirtualKey | None:
        static = self._static.get(digest)
        if static is not None:
            return static
        doc = await ops.GetDoc(self.store, KEY_DOC_KIND, key_id(digest)).arun()
        if doc is not None and hmac.compare_digest(str(doc.get("secret_hash", "")), digest):
            return VirtualKey.from_doc(doc)
        return None

    async def list(
        self, *, user: str | None = None, team: str | None = None, include_revoked: bool = True
    ) -> list[VirtualKey]:
        docs = await ops.ListDocs(self.store, KEY_DOC_KIND).arun()
        keys = [*self._static.values(), *(VirtualKey.from_doc(doc) for _, doc in docs)]
        return [
            k
            for k in keys
            if (user is None or k.user == user)
            and (team is None or k.team == team)
            and (include_revoked or not k.revoked)
        ]

    async def update(self, id_: str, fields: Mapping[str, Any]) -> VirtualKey:
        """Change models, budgets, expiry, name, team/org or metadata of an API-created key."""
        _check_fields(fields, _PATCHABLE)
        key = await self._editable(id_)
        now = self.clock()
        updated = _apply(replace(key, updated_at=now), fields, now)
        await self._check_parents(updated, fields)
        await ops.PutDoc(self.store, KEY_DOC_KIND, updated.id, updated.to_doc()).arun()
        self.invalidate(updated)
        return updated

    async def revoke(self, id_: str) -> VirtualKey:
        """Revoke for good (the record stays, so spend logs and budgets still name it)."""
        key = await self._editable(id_)
        if key.revoked:
            return key
        now = self.clock()
        revoked = replace(key, revoked=True, revoked_at=now, updated_at=now)
        await ops.PutDoc(self.store, KEY_DOC_KIND, revoked.id, revoked.to_doc()).arun()
        self.invalidate(revoked)
        return revoked

    async def _check_parents(self, key: VirtualKey, fields: Mapping[str, Any]) -> None:
        if self.parents is None:
            return
        for kind in ("team", "org"):
            name = getattr(key, kind)
            if kind in fields and name is not None:
                await self.parents.require(kind, name, f"key.{kind}")

    async def _editable(self, id_: str) -> VirtualKey:
        if id_ in self._static_ids:
            raise GatewayError(
                409, "key_in_config", f"key {id_} is defined in the config file; edit it there"
            )
        key = await self.get(id_)
        if key is None:
            raise GatewayError(404, "key_not_found", f"no key with id {id_!r}")
        return key


# --------------------------------------------------------------------------- field parsing


def _check_fields(fields: Mapping[str, Any], allowed: frozenset[str]) -> None:
    if not isinstance(fields, Mapping):
        raise InvalidInputError("the request body must be a JSON object")
    unknown = sorted(set(fields) - allowed)
    if unknown:
        # A typo ("budgett") silently ignored would leave a key without its cap.
        raise InvalidInputError(f"unknown field(s): {', '.join(unknown)}")


def _optional_str(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string or null")
    return value or None


def _apply(key: VirtualKey, fields: Mapping[str, Any], now: float) -> VirtualKey:
    """``key`` with ``fields`` applied; absent fields keep their value."""
    changes: dict[str, Any] = {}
    for name in ("team", "org", "name"):
        if name in fields:
            changes[name] = _optional_str(fields, name)
    if "models" in fields:
        changes["models"] = parse_models(fields["models"], "key")
    budget_fields = {"budget", "max_budget", "period", "budget_duration", "timezone", "rolling"}
    if budget_fields & set(fields):
        merged: dict[str, Any] = key.budget.to_dict() if key.budget else {}
        for name in budget_fields & set(fields):
            target = {"max_budget": "budget", "budget_duration": "period"}.get(name, name)
            merged[target] = fields[name]
        if merged.get("budget") is None and key.budget is None and "budget" not in fields:
            raise InvalidInputError("a period without a budget: also send budget")
        changes["budget"] = BudgetSpec.parse(merged, "key")
    if "model_budgets" in fields:
        changes["model_budgets"] = parse_model_budgets(fields["model_budgets"], "key")
    if "expires_at" in fields and "duration" in fields:
        raise InvalidInputError("send expires_at or duration, not both")
    if "expires_at" in fields:
        changes["expires_at"] = _parse_time(fields["expires_at"])
    if "duration" in fields:
        changes["expires_at"] = _parse_duration(fields["duration"], now)
    if "metadata" in fields:
        metadata = fields["metadata"]
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidInputError("metadata must be a JSON object")
        changes["metadata"] = dict(metadata or {})
    changes["limits"] = key.limits.updated(fields, "key")
    return replace(key, **changes)


def _parse_time(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInputError("expires_at must be an ISO 8601 time or epoch seconds")
    if isinstance(value, int | float):
        try:
            at = float(value)
        except OverflowError:  # an int beyond a float
            raise InvalidInputError("expires_at is out of range") from None
        if not math.isfinite(at):
            raise InvalidInputError("expires_at must be finite")
        return _in_range(at, "expires_at")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(f"expires_at {value!r} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return _in_range(parsed.timestamp(), "expires_at")
    raise InvalidInputError("expires_at must be an ISO 8601 time or epoch seconds")


def _parse_duration(value: object, now: float) -> float | None:
    if value is None:
        return None
    match = _DURATION_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInputError("duration must look like '30d', '12h', '90m', '2w' or '45s'")
    try:
        at = now + int(match.group(1)) * _DURATION_SECONDS[match.group(2)]
    except (OverflowError, ValueError):  # more digits than a float (or int parsing) allows
        raise InvalidInputError("duration is out of range") from None
    return _in_range(at, "duration")


def _in_range(at: float, name: str) -> float:
    """``at`` if it is a time the key's record can show (years 1-9999), else a 400."""
    try:
        datetime.fromtimestamp(at, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidInputError(f"{name} is out of range (past the year 9999)") from None
    return at


def _static_key(entry: Mapping[str, Any], index: int) -> VirtualKey:
    where = f"keys[{index}]"
    secret = entry.get("key")
    if not isinstance(secret, str) or len(secret) < 16:
        raise InvalidInputError(f"{where}.key must be a secret of at least 16 characters")
    fields = {k: v for k, v in entry.items() if k not in ("key", "id")}
    _check_fields(fields, _FIELDS)
    user = fields.get("user")
    if not isinstance(user, str) or not user:
        raise InvalidInputError(f"{where}.user is required")
    digest = hash_secret(secret)
    id_ = str(entry.get("id") or key_id(digest))
    return _apply(VirtualKey(id_, user, digest, source="config"), fields, 0.0)
