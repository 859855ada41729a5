\set VERBOSITY terse
-- placeholder: filled by the issue 10 work
SELECT 1 AS placeholder;
