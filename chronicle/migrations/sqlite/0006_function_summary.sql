-- Per-function counts and the builds each function was seen in, kept up to date on every
-- insert and delete, so that `chronicle functions`, `ask "which functions..."`, the MCP tool
-- and the dashboard read a few rows instead of every record (800 ms over a million records).
-- First and last instants are not kept: they are one step to an end of an index
-- (`records_function_timestamp`, `records_function_build`), and keeping them would make a
-- delete of the oldest calls look the next one up for every row it takes.
-- Never edit this file once it has landed: add 0007_*.sql instead.

CREATE TABLE function_totals (
    function  TEXT    PRIMARY KEY,
    calls     INTEGER NOT NULL,
    errors    INTEGER NOT NULL,
    unwound   INTEGER NOT NULL,
    -- Calls that returned with a duration: what the duration percentiles rank.
    timed     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE function_builds (
    function  TEXT    NOT NULL,
    build_id  TEXT    NOT NULL,
    binary    TEXT    NOT NULL,
    calls     INTEGER NOT NULL,
    PRIMARY KEY (function, build_id, binary)
) WITHOUT ROWID;

INSERT INTO function_totals
SELECT function, COUNT(*), SUM(status = 'error'), SUM(status = 'unwound'),
       SUM(duration_ns IS NOT NULL AND status != 'unwound')
FROM records GROUP BY function;

INSERT INTO function_builds
SELECT function, build_id, binary, COUNT(*) FROM records GROUP BY function, build_id, binary;

-- Inserts add to these in the same transaction, one statement per function and build for a
-- whole batch (`SqliteStorage::insert`): a trigger on insert made SQLite keep a statement
-- journal for every row, 20 more page writes a record, and cost the store a third of its
-- insert rate. Deletes go through a trigger: they are rare, take many rows in one
-- statement, and a trigger keeps every way of deleting right.
CREATE TRIGGER records_summary_delete AFTER DELETE ON records BEGIN
    UPDATE function_totals SET
        calls = calls - 1,
        errors = errors - (old.status = 'error'),
        unwound = unwound - (old.status = 'unwound'),
        timed = timed - (old.duration_ns IS NOT NULL AND old.status != 'unwound')
    WHERE function = old.function;
    DELETE FROM function_totals WHERE function = old.function AND calls = 0;
    UPDATE function_builds SET calls = calls - 1
    WHERE function = old.function AND build_id = old.build_id AND binary = old.binary;
    DELETE FROM function_builds
    WHERE function = old.function AND build_id = old.build_id AND binary = old.binary
      AND calls = 0;
END;
