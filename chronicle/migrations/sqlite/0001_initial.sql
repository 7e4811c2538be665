-- Call records. Never edit this file once it has landed: add 0002_*.sql instead.

CREATE TABLE records (
    -- AUTOINCREMENT so that ids are never reused after old records are cleaned up:
    -- replay results and exports refer to calls by id.
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    function      TEXT    NOT NULL,
    binary        TEXT    NOT NULL,
    build_id      TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    tid           INTEGER NOT NULL,
    -- Nanoseconds since the Unix epoch, UTC.
    timestamp_ns  INTEGER NOT NULL,
    -- NULL for calls that never returned.
    duration_ns   INTEGER,
    status        TEXT    NOT NULL CHECK (status IN ('ok', 'error', 'unwound')),
    -- Lossless tagged JSON (see chronicle/src/storage/codec.rs), not the export format.
    args          TEXT    NOT NULL,
    ret           TEXT,
    -- JSON array of [name, reason] pairs.
    unavailable   TEXT    NOT NULL,
    replayable    INTEGER NOT NULL
);

CREATE INDEX records_function_timestamp ON records (function, timestamp_ns);
