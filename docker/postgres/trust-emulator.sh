#!/bin/sh
# Runs once, at first initialisation. The RDS IAM emulator verifies IAM tokens and then opens the session as the same
# user without a password, as RDS itself does internally: trust its fixed address (and only it), for the service's
# database and IAM user only, ahead of the image's own password rule. Anything else from there, the superuser
# included, still needs a password.
set -eu
sed -i '1i host tasksmanager db_iam_user 172.28.0.10/32 trust' "$PGDATA/pg_hba.conf"
