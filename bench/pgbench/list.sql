-- W3's SQL: the first page, one row more than the page to learn whether another follows.
SELECT id, name FROM tasks ORDER BY id ASC LIMIT 51;
