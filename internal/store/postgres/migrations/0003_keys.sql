-- 0003: API keys, the key that took each lease, and the audit log.
--
-- Encodings as in 0001. A key's id is its public part (12 hex digits);
-- hash is the SHA-256 of its secret (the secret is never stored); scopes is
-- a JSON array of strings. Audit strings are text: the server writes them
-- as valid UTF-8 without control characters. No column holds a secret.

CREATE TABLE keys (
    id        text   NOT NULL PRIMARY KEY,
    name      text   NOT NULL,
    scopes    text   NOT NULL,
    hash      bytea  NOT NULL,
    created   bigint,
    expires   bigint,
    revoked   bigint,
    last_used bigint
);

ALTER TABLE leases ADD COLUMN key_id text NOT NULL DEFAULT '';
-- The key of a waiting request with a ticket ('' for none).
ALTER TABLE waiters ADD COLUMN key_id text NOT NULL DEFAULT '';

CREATE TABLE audit (
    seq        numeric(20,0) NOT NULL PRIMARY KEY,
    at         bigint,
    key_id     text          NOT NULL,
    key_name   text          NOT NULL,
    remote     text          NOT NULL,
    request_id text          NOT NULL,
    action     text          NOT NULL,
    target     text          NOT NULL,
    status     bigint        NOT NULL,
    before     text          NOT NULL,
    after      text          NOT NULL
);

CREATE INDEX audit_at ON audit (at);
