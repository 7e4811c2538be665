-- What a captured call did outside itself (files, network, HTTP, databases). Never edit this
-- file once it has landed: add 0006_*.sql instead.

-- Tagged JSON `[[kind, offset_ns, duration_ns, [name, value, ...]], ...]`; NULL when none.
ALTER TABLE records ADD COLUMN dependencies TEXT;
