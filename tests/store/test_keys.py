"""API keys: shown once, stored as a sha256 only, verified in constant time, revocable."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from pneumocxr.errors import ConfigError
from pneumocxr.store import open_store
from pneumocxr.store.keys import create_key, list_keys, revoke_key, verify_key


@pytest.fixture
def store(db_url):
    store = open_store(db_url)
    yield store
    store.dispose()


def test_a_created_key_verifies_to_its_id_until_revoked(store):
    info, token = create_key(store, "  ward 3 reader  ")
    assert info.name == "ward 3 reader" and info.active
    assert token.startswith(f"pcx_{info.id}_")
    assert verify_key(store, token) == info.id
    revoked = revoke_key(store, info.id)
    assert not revoked.active and revoked.revoked_at is not None
    assert verify_key(store, token) is None
    assert revoke_key(store, info.id).revoked_at == revoked.revoked_at  # revoking twice changes nothing
    assert [(k.id, k.active) for k in list_keys(store)] == [(info.id, False)]


def test_only_the_secret_hash_is_stored(store):
    _, token = create_key(store, "pacs bridge")
    secret = token.split("_", 2)[2]
    with store.engine.connect() as connection:
        rows = [tuple(str(v) for v in row) for row in connection.execute(text("SELECT * FROM api_keys"))]
    assert rows and not any(secret in value for row in rows for value in row)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret
        lambda t: "xyz" + t[3:],  # wrong prefix
        lambda t: t.replace("_k", "_kffff", 1),  # unknown id
        lambda t: t.rsplit("_", 1)[0],  # no secret
        lambda t: "",
        lambda t: "Bearer",
    ],
)
def test_a_wrong_token_verifies_to_nothing(store, mangle):
    _, token = create_key(store, "someone")
    assert verify_key(store, mangle(token)) is None
    assert verify_key(store, None) is None


def test_each_key_is_independent(store):
    (a, token_a), (b, token_b) = create_key(store, "a"), create_key(store, "b")
    revoke_key(store, a.id)
    assert verify_key(store, token_a) is None and verify_key(store, token_b) == b.id


@pytest.mark.parametrize("name", ["", "   ", "x" * 129])
def test_a_key_needs_a_sensible_name(store, name):
    with pytest.raises(ConfigError, match="name"):
        create_key(store, name)


def test_revoking_an_unknown_key_names_the_fix(store):
    with pytest.raises(ConfigError, match="keys list"):
        revoke_key(store, "k000000000000")
