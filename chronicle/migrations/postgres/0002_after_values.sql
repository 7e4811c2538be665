-- Output parameters read again at return (`attach --after`). Never edit this file once it
-- has landed: add 0003_*.sql instead.

-- Lossless tagged JSON fields, like `args`; NULL when none were captured.
ALTER TABLE records ADD COLUMN after_values TEXT;
