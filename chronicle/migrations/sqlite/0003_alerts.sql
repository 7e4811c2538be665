-- Alerts raised by capture limits. Never edit this file once it has landed: add 0004_*.sql.

CREATE TABLE alerts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Nanoseconds since the Unix epoch, UTC.
    timestamp_ns  INTEGER NOT NULL,
    function      TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('function_limit', 'type_limit')),
    -- `field_path=value` for type limits.
    key           TEXT,
    limit_value   INTEGER NOT NULL,
    message       TEXT    NOT NULL
);
