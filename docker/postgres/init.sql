-- Runs once, when the PostgreSQL container first initialises its data directory.
-- The same database and user as the original .NET service. On RDS, db_iam_user gets `GRANT rds_iam` and no password;
-- here, without IAM, it gets a local-only password so the service can be tried with APP__DATABASE__AUTH=password.
CREATE DATABASE tasksmanager;
CREATE ROLE db_iam_user LOGIN PASSWORD 'local-only-password';

\connect tasksmanager
-- The service applies its own migrations at start, so it needs to create its table; it needs nothing else.
GRANT CONNECT ON DATABASE tasksmanager TO db_iam_user;
GRANT USAGE, CREATE ON SCHEMA public TO db_iam_user;
