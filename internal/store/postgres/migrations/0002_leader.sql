-- 0002: leadership of the replicas that share this database.
--
-- One row. epoch grows by one at every take-over; lease_until is by the
-- database's clock (now()), never a replica's. An ordinary, logged table:
-- an unlogged one is emptied by crash recovery, and a lost epoch would let
-- a deposed leader commit again.

CREATE TABLE leader (
    one         boolean     NOT NULL PRIMARY KEY DEFAULT true CHECK (one),
    epoch       bigint      NOT NULL CHECK (epoch >= 0),
    -- the replica that leads: its id and the address others forward to
    holder      text        NOT NULL,
    address     text        NOT NULL,
    -- the application_name of every session of the leader's process, so
    -- that a successor can end them all (pg_terminate_backend)
    sessions    text        NOT NULL,
    elected     timestamptz NOT NULL,
    lease_until timestamptz NOT NULL
);

INSERT INTO leader (epoch, holder, address, sessions, elected, lease_until)
VALUES (0, '', '', '', '-infinity', '-infinity');

-- allot_check_epoch fails the transaction it runs in unless the leader row
-- still carries epoch want. Every commit of a leader runs it first: the row
-- lock FOR SHARE conflicts with a take-over's UPDATE, so either the
-- take-over waits for the commit to end, or the commit sees the new epoch
-- and fails. (FOR KEY SHARE does not conflict with an UPDATE that leaves
-- the key alone, and was measured to lose an acknowledged write.)
CREATE FUNCTION allot_check_epoch(want bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    got bigint;
BEGIN
    SELECT epoch INTO got FROM leader FOR SHARE;
    IF got IS DISTINCT FROM want THEN
        RAISE EXCEPTION 'allot: deposed: the database is at leader epoch %, this replica led epoch %', got, want
            USING ERRCODE = 'AL001';
    END IF;
END
$$;
