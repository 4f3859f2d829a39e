//! The emulator as its users meet it: `psql` and the `mariadb` client over real sockets, with tokens from the AWS
//! SDK's own signer, in front of the local PostgreSQL (`TEST_DATABASE_URL`) and MariaDB (`TEST_MYSQL_URL`).

mod limits;
mod mysql;
mod secrets;
mod support;
mod tokens;
