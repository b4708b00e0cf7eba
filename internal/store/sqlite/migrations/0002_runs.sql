-- 0002: task runs and flow runs.
--
-- Encodings as in 0001. kind ('task', 'flow'), state ('Pending', …,
-- 'Cancelled') and collision_strategy ('enqueue', 'cancel_new') are the
-- API's spellings. tags is a JSON array of strings; history is a JSON array
-- of {"state", "at" (nanoseconds or null), "message"}, oldest first. Like a
-- lease's holds, neither is ever queried by SQL: the whole state is read
-- once, at start.

CREATE TABLE runs (
    id                 BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    kind               TEXT    NOT NULL,
    name               TEXT    NOT NULL,
    tags               TEXT    NOT NULL,
    -- the parent run's id, or NULL for none
    parent_id          BLOB    CHECK (parent_id IS NULL OR length(parent_id) = 16),
    state              TEXT    NOT NULL,
    history            TEXT    NOT NULL,
    collision_strategy TEXT    NOT NULL,
    lease_duration     INTEGER NOT NULL,
    -- the lease the run holds or held, or NULL before it ran
    lease_id           BLOB    CHECK (lease_id IS NULL OR length(lease_id) = 16),
    fence              INTEGER NOT NULL,
    wait_seq           INTEGER NOT NULL,
    created            INTEGER,
    updated            INTEGER
) STRICT, WITHOUT ROWID;
