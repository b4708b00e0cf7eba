-- 0006: API keys, the key that took each lease, and the audit log.
--
-- A key's id is its public part (12 hex digits); hash is the SHA-256 of its
-- secret (the secret itself is never stored); scopes is a JSON array of
-- strings. Times as in 0001 (NULL: never). Leases written before have no
-- key: ''.

CREATE TABLE keys (
    id        TEXT    NOT NULL PRIMARY KEY,
    name      TEXT    NOT NULL,
    scopes    TEXT    NOT NULL,
    hash      BLOB    NOT NULL,
    created   INTEGER,
    expires   INTEGER,
    revoked   INTEGER,
    last_used INTEGER
) STRICT, WITHOUT ROWID;

ALTER TABLE leases ADD COLUMN key_id TEXT NOT NULL DEFAULT '';

-- The audit log: seq numbers the records (sema's order); at is their time
-- (nanoseconds), by which records past the retention are deleted. No
-- column ever holds a key's secret.
CREATE TABLE audit (
    seq        INTEGER NOT NULL PRIMARY KEY,
    at         INTEGER,
    key_id     TEXT    NOT NULL,
    key_name   TEXT    NOT NULL,
    remote     TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    status     INTEGER NOT NULL,
    before     TEXT    NOT NULL,
    after      TEXT    NOT NULL
) STRICT;

CREATE INDEX audit_at ON audit (at);

-- The key of a waiting request with a ticket ('' for none): the lease it
-- is granted after a restart is that key's.
ALTER TABLE waiters ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
