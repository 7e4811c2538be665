-- Indexes for `chronicle functions`, `query`, `ask` and the MCP tools. Each aggregate of a
-- function (counts by status, outcome groups, duration percentiles, the slowest calls, the
-- builds seen) reads one of these in order without touching the records, whatever mix of
-- status, build and time filters it has: the trailing columns make them covering.

CREATE INDEX records_function_duration
    ON records (function, duration_ns, status, build_id, timestamp_ns);
CREATE INDEX records_function_outcome
    ON records (function, status, ret, build_id, timestamp_ns);
CREATE INDEX records_function_build
    ON records (function, build_id, binary, timestamp_ns);
