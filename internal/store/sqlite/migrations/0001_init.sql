-- 0001: the durable shadow of the state machine.
--
-- Ids are 16-byte UUIDs. Times are INTEGER nanoseconds since the Unix epoch
-- (UTC); NULL stands for the zero time.Time. Durations are INTEGER
-- nanoseconds. Fences are uint64 stored bit for bit in a signed INTEGER.

CREATE TABLE limits (
    id                         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    name                       TEXT    NOT NULL UNIQUE,
    slot_limit                 INTEGER NOT NULL,
    active                     INTEGER NOT NULL CHECK (active IN (0, 1)),
    slot_decay_per_second      REAL    NOT NULL,
    avg_slot_occupancy_seconds REAL    NOT NULL,
    created                    INTEGER,
    updated                    INTEGER,
    level                      REAL    NOT NULL,
    denied                     REAL    NOT NULL,
    decay_at                   INTEGER
) STRICT, WITHOUT ROWID;

CREATE TABLE leases (
    id              BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    -- (16-byte limit id, signed varint slots) pairs, in order; see encode.go.
    holds           BLOB    NOT NULL,
    slots           INTEGER NOT NULL,
    mode            TEXT    NOT NULL,
    holder_type     TEXT    NOT NULL,
    holder_id       TEXT    NOT NULL,
    -- a JSON object of strings, or NULL when there is no metadata
    holder_metadata TEXT,
    anonymous       INTEGER NOT NULL CHECK (anonymous IN (0, 1)),
    created         INTEGER,
    duration        INTEGER NOT NULL,
    expires         INTEGER,
    fence           INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- meta holds single values; 'fence' is the highest fencing token ever
-- committed, which only grows.
CREATE TABLE meta (
    key   TEXT    NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO meta (key, value) VALUES ('fence', 0);
