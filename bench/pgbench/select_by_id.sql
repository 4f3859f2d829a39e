-- W2's SQL: a primary-key lookup of a random seeded task (bench_ids maps 1..N to the seeded ids).
\set n random(1, 10000)
SELECT id, name FROM tasks WHERE id = (SELECT id FROM bench_ids WHERE n = :n) LIMIT 1;
