-- 0004: tickets and durable waiters.
--
-- Encodings as in 0001. A lease keeps the ticket of the request it was
-- granted to (NULL for none), so that a retry with that ticket gets the
-- lease back after a restart. A waiter is a waiting request that carries a
-- ticket, keyed by it; seq is its place in the order of arrival (a uint64
-- stored bit for bit, like fences), names a JSON array of strings in the
-- request's order, holder_metadata as a lease's, deadline NULL for none.

ALTER TABLE leases ADD COLUMN ticket TEXT;

CREATE TABLE waiters (
    ticket          TEXT    NOT NULL PRIMARY KEY,
    seq             INTEGER NOT NULL,
    names           TEXT    NOT NULL,
    slots           INTEGER NOT NULL,
    mode            TEXT    NOT NULL,
    lease_id        BLOB    CHECK (lease_id IS NULL OR length(lease_id) = 16),
    lease_duration  INTEGER NOT NULL,
    holder_type     TEXT    NOT NULL,
    holder_id       TEXT    NOT NULL,
    holder_metadata TEXT,
    no_lease        INTEGER NOT NULL CHECK (no_lease IN (0, 1)),
    anonymous       INTEGER NOT NULL CHECK (anonymous IN (0, 1)),
    since           INTEGER,
    deadline        INTEGER
) STRICT, WITHOUT ROWID;
