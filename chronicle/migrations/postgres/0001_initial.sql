-- Call records. Never edit this file once it has landed: add 0002_*.sql instead.
-- The same columns as the SQLite schema; `chronicle_schema_version` (created by the code that
-- applies these files) lists the migrations applied.

CREATE TABLE records (
    -- An identity never hands out a value twice, not even after a rolled-back insert or a
    -- cleanup: replay results and exports refer to calls by id. Writers take ids from its
    -- sequence before copying a batch in (see chronicle/src/storage/postgres.rs).
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Byte order ("C"), as SQLite and Rust sort names, whatever the database's locale.
    function      TEXT    COLLATE "C" NOT NULL,
    "binary"      TEXT    NOT NULL,
    build_id      TEXT    NOT NULL,
    -- u32 in Chronicle; PostgreSQL has no unsigned integers.
    pid           BIGINT  NOT NULL CHECK (pid BETWEEN 0 AND 4294967295),
    tid           BIGINT  NOT NULL CHECK (tid BETWEEN 0 AND 4294967295),
    -- Nanoseconds since the Unix epoch, UTC.
    timestamp_ns  BIGINT  NOT NULL,
    -- NULL for calls that never returned.
    duration_ns   BIGINT  CHECK (duration_ns >= 0),
    status        TEXT    NOT NULL CHECK (status IN ('ok', 'error', 'unwound')),
    -- Lossless tagged JSON (see chronicle/src/storage/codec.rs), not the export format. TEXT,
    -- not JSONB: JSONB would re-render what the codec wrote.
    args          TEXT    NOT NULL,
    ret           TEXT,
    -- JSON array of [name, reason] pairs.
    unavailable   TEXT    NOT NULL,
    replayable    BOOLEAN NOT NULL
);

CREATE INDEX records_function_timestamp ON records (function, timestamp_ns);
