-- 0003: the global limits a run takes together with its tags' limits.
--
-- limits is a JSON array of limit names, like tags; slots is the number of
-- slots the run takes of each of them. Runs written before have none: an
-- empty array and 1.

ALTER TABLE runs ADD COLUMN limits TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN slots INTEGER NOT NULL DEFAULT 1;
