-- Alerts raised by capture limits. Never edit this file once it has landed: add 0004_*.sql.

CREATE TABLE alerts (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Nanoseconds since the Unix epoch, UTC.
    timestamp_ns  BIGINT  NOT NULL,
    function      TEXT    COLLATE "C" NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('function_limit', 'type_limit')),
    -- `field_path=value` for type limits.
    key           TEXT,
    limit_value   BIGINT  NOT NULL,
    message       TEXT    NOT NULL
);
