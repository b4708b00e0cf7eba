-- 0001: the durable shadow of the state machine.
--
-- Encodings (see encode.go): ids are uuid. Times are bigint nanoseconds
-- since the Unix epoch (UTC), NULL for the zero time.Time: timestamptz keeps
-- microseconds only, and the state machine's times carry nanoseconds. Durations are
-- bigint nanoseconds. Fences are numeric(20,0): every uint64, compared
-- correctly (a bigint would hold those above 2^63 as negative numbers).
-- Strings that may hold a NUL byte (a holder's type and id, a run's name)
-- are bytea, UTF-8 as given: text refuses NUL. Metadata, tags and histories
-- are JSON kept as text (JSON escapes NUL as \u0000; jsonb would refuse it).
-- Limit names are text: sema refuses control characters in them.

CREATE TABLE limits (
    id                         uuid             NOT NULL PRIMARY KEY,
    name                       text             NOT NULL UNIQUE,
    slot_limit                 bigint           NOT NULL,
    active                     boolean          NOT NULL,
    slot_decay_per_second      double precision NOT NULL,
    avg_slot_occupancy_seconds double precision NOT NULL,
    created                    bigint,
    updated                    bigint,
    level                      double precision NOT NULL,
    denied                     double precision NOT NULL,
    decay_at                   bigint,
    -- on a template, how long a limit it creates may sit unused before it
    -- is removed (0 keeps them); on a limit a template created
    -- (from_template), its own idle time
    idle                       bigint           NOT NULL CHECK (idle >= 0),
    from_template              boolean          NOT NULL
);

CREATE TABLE leases (
    id              uuid          NOT NULL PRIMARY KEY,
    -- (16-byte limit id, signed varint slots) pairs, in order; see encode.go.
    holds           bytea         NOT NULL,
    slots           bigint        NOT NULL,
    mode            text          NOT NULL,
    holder_type     bytea         NOT NULL,
    holder_id       bytea         NOT NULL,
    -- a JSON object of strings, or NULL when there is no metadata
    holder_metadata text,
    anonymous       boolean       NOT NULL,
    created         bigint,
    duration        bigint        NOT NULL,
    expires         bigint,
    fence           numeric(20,0) NOT NULL CHECK (fence BETWEEN 0 AND 18446744073709551615),
    -- the ticket of the request it was granted to, or NULL for none
    ticket          text
);

CREATE TABLE runs (
    id                 uuid          NOT NULL PRIMARY KEY,
    kind               text          NOT NULL,
    name               bytea         NOT NULL,
    -- a JSON array of strings
    tags               text          NOT NULL,
    parent_id          uuid,
    state              text          NOT NULL,
    -- a JSON array of {"state", "at" (nanoseconds or null), "message"}
    history            text          NOT NULL,
    collision_strategy text          NOT NULL,
    lease_duration     bigint        NOT NULL,
    lease_id           uuid,
    fence              numeric(20,0) NOT NULL CHECK (fence BETWEEN 0 AND 18446744073709551615),
    wait_seq           numeric(20,0) NOT NULL CHECK (wait_seq BETWEEN 0 AND 18446744073709551615),
    created            bigint,
    updated            bigint,
    -- the global limits the run takes, a JSON array of names, and the
    -- slots it takes of each
    limits             text          NOT NULL,
    slots              bigint        NOT NULL
);

-- A waiting request that carries a ticket, keyed by it; seq is its place in
-- the order of arrival, names a JSON array in the request's order,
-- deadline NULL for none. Tickets are [A-Za-z0-9._:-]: text.
CREATE TABLE waiters (
    ticket          text          NOT NULL PRIMARY KEY,
    seq             numeric(20,0) NOT NULL CHECK (seq BETWEEN 0 AND 18446744073709551615),
    names           text          NOT NULL,
    slots           bigint        NOT NULL,
    mode            text          NOT NULL,
    lease_id        uuid,
    lease_duration  bigint        NOT NULL,
    holder_type     bytea         NOT NULL,
    holder_id       bytea         NOT NULL,
    holder_metadata text,
    no_lease        boolean       NOT NULL,
    anonymous       boolean       NOT NULL,
    since           bigint,
    deadline        bigint
);

-- fence is the highest fencing token ever committed; it only grows (Commit
-- writes greatest(value, the batch's highest), so it is right whatever
-- writes it).
CREATE TABLE fence (
    one   boolean       NOT NULL PRIMARY KEY DEFAULT true CHECK (one),
    value numeric(20,0) NOT NULL CHECK (value BETWEEN 0 AND 18446744073709551615)
);

INSERT INTO fence (value) VALUES (0);
