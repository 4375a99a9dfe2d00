"""API keys: created with a random secret shown once, stored as its sha256, revocable.

A key is ``pcx_<id>_<secret>``: the id is public (it appears in the audit log), the 32-byte secret
is not. sha256 is the right hash here (not a slow password hash): the secret is random with 256 bits
of entropy, so there is nothing to brute-force; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select

from pneumocxr.errors import ConfigError
from pneumocxr.store.db import Store
from pneumocxr.store.schema import ApiKey

PREFIX = "pcx"


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _utc(moment: datetime | None) -> datetime | None:
    """Aware UTC: SQLite hands a stored UTC time back without its offset, PostgreSQL with it."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.name, _utc(row.created_at), _utc(row.revoked_at))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(store: Store, name: str) -> tuple[KeyInfo, str]:
    """A new key named ``name``: (its record, the token to give the client — shown only now)."""
    name = name.strip()
    if not name or len(name) > 128:
        raise ConfigError("a key needs a name of 1-128 characters (who or what uses it)")
    key_id = "k" + secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    created = datetime.now(timezone.utc)
    with store.session() as session:
        session.add(ApiKey(id=key_id, name=name, secret_sha256=_digest(secret), created_at=created))
    return KeyInfo(key_id, name, created, None), f"{PREFIX}_{key_id}_{secret}"


def verify_key(store: Store, token: str | None) -> str | None:
    """The key id of a valid, unrevoked ``token``, else None."""
    if not token or token.count("_") < 2:
        return None
    prefix, key_id, secret = token.split("_", 2)
    if prefix != PREFIX:
        return None
    with store.session() as session:
        row = session.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return None
        return key_id if hmac.compare_digest(row.secret_sha256, _digest(secret)) else None


def revoke_key(store: Store, key_id: str) -> KeyInfo:
    with store.session() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise ConfigError(f"no API key {key_id!r}; `pneumocxr serve keys list` shows them")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(timezone.utc)
        return _info(row)


def list_keys(store: Store) -> list[KeyInfo]:
    with store.session() as session:
        rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()
        return [_info(row) for row in rows]
