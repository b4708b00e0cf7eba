-- 0004: idle removal of limits that templates create.
--
-- idle is a duration in INTEGER nanoseconds: on a template, how long a limit
-- it creates may sit unused before it is removed (0 keeps them); on a limit
-- a template created (from_template = 1), its own idle time, copied from the
-- template at creation.
--
-- Templates that existed before get the default idle time, one hour. Limits
-- they created before cannot be told from limits created by hand, so they
-- are kept (from_template = 0); delete them by pattern if they piled up.

ALTER TABLE limits ADD COLUMN idle INTEGER NOT NULL DEFAULT 0 CHECK (idle >= 0);
ALTER TABLE limits ADD COLUMN from_template INTEGER NOT NULL DEFAULT 0 CHECK (from_template IN (0, 1));

UPDATE limits SET idle = 3600000000000 WHERE instr(name, '*') > 0;
