-- Indexes for `chronicle query`, `chronicle ask` and the MCP tools: duration percentiles and
-- the slowest calls of a function read one index range in order; error and build filters
-- narrow by status or build before time.

CREATE INDEX records_function_duration ON records (function, duration_ns);
CREATE INDEX records_function_status_timestamp ON records (function, status, timestamp_ns);
CREATE INDEX records_function_build_timestamp ON records (function, build_id, timestamp_ns);
