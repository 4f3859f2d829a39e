-- Runs once, when the PostgreSQL container first initialises its data directory.
-- The same database and user as the original .NET service. On RDS, db_iam_user gets `GRANT rds_iam` and no password;
-- here it also gets a local-only password so the service can be tried with APP__DATABASE__AUTH=password.
CREATE DATABASE tasksmanager;
CREATE ROLE db_iam_user LOGIN PASSWORD 'local-only-password';
-- The RDS IAM emulator lets a token in only for a member of rds_iam, as RDS does. RDS has the role already; here it is
-- made now, so that the emulator, which connects as db_iam_user (the one user PostgreSQL trusts from it), only has
-- to read memberships and never to create a role.
CREATE ROLE rds_iam;
GRANT rds_iam TO db_iam_user;

\connect tasksmanager
-- The service applies its own migrations at start, so it needs to create its table; it needs nothing else.
GRANT CONNECT ON DATABASE tasksmanager TO db_iam_user;
GRANT USAGE, CREATE ON SCHEMA public TO db_iam_user;
