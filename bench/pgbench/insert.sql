-- W1's SQL: one INSERT of a new id and name.
INSERT INTO tasks (id, name) VALUES (gen_random_uuid(), 'benchmark task');
