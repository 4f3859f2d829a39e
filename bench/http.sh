#!/usr/bin/env bash
# HTTP benchmark of tasks-api against PostgreSQL or MariaDB, beside the database's own load tool running the same SQL
# (pgbench, or mysqlslap): the database's ceiling here.
#
#   bench/http.sh                       # PostgreSQL: needs wrk (apt-get install wrk), pgbench, psql
#   BENCH_ENGINE=mariadb bench/http.sh  # MariaDB/MySQL: needs wrk, mysqlslap, mariadb (mariadb-client)
#
# Seeds 10,000 tasks, then runs W1 POST /tasks, W2 GET /tasks/{id} (random seeded ids), W3 GET /tasks?limit=50 with
# 64 connections for $BENCH_SECONDS each, and the ceiling tool (16 clients) on each workload's SQL. Prints req/s,
# p50, p99, non-2xx responses, the ratio to the ceiling, and the service's peak RSS.
#
# BENCH_MODES="password iam-direct iam" (the default) runs the service three times: with password authentication
# straight to PostgreSQL; with IAM authentication straight to PostgreSQL (the local server trusts the connection, so the
# token goes unchecked, but the service signs, renews and installs tokens exactly as in production: this isolates what
# IAM costs the service); and with IAM authentication through the RDS IAM emulator (TLS verify-full, every token
# checked), where the emulator's relay adds a process on the same cores. It then compares each IAM mode with password.
# MariaDB runs password and iam only: it checks passwords itself, so a token cannot go straight to it unchecked.
set -euo pipefail
cd "$(dirname "$0")/.."

engine=${BENCH_ENGINE:-postgres}
case $engine in
  postgres)
    admin_url=${BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
    default_modes="password iam-direct iam"
    tools="wrk pgbench psql" ;;
  mariadb)
    admin_url=${BENCH_ADMIN_URL:-mysql://root@127.0.0.1:3306/mysql}
    default_modes="password iam"
    tools="wrk mysqlslap mariadb" ;;
  *) echo "bench: BENCH_ENGINE is postgres or mariadb, not $engine" >&2; exit 1 ;;
esac
server_url=${admin_url%/*}
# mariadb and mysqlslap take the server as options, not as a URL.
server_address=${server_url#*://}   # user@host:port
server_host_port=${server_address#*@}
server_options=(-h "${server_host_port%:*}" -P "${server_host_port##*:}" -u "${server_address%%@*}")
seconds=${BENCH_SECONDS:-10}
connections=${BENCH_CONNECTIONS:-64}
pool=${BENCH_POOL:-16}
port=${BENCH_PORT:-18080}
emulator_port=${BENCH_EMULATOR_PORT:-15433}
modes=${BENCH_MODES:-$default_modes}
database=tasks_bench
database_url="$server_url/$database"
work=$(mktemp -d)
server_pid=
emulator_pid=
stop_processes() {
  for pid in $server_pid $emulator_pid; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  server_pid= emulator_pid=
}

# The engine's command-line client on the administrator's connection (statements on standard input or as arguments).
admin_sql() {
  if [[ $engine == postgres ]]; then
    psql -Atq "$admin_url" "$@"
  else
    mariadb -N "${server_options[@]}" "$@"
  fi
}

# The same, on the benchmark's database.
database_sql() {
  if [[ $engine == postgres ]]; then
    psql -Atq "$database_url" "$@"
  else
    admin_sql "$database" "$@"
  fi
}

drop_database() {
  if [[ $engine == postgres ]]; then
    admin_sql -c "DROP DATABASE IF EXISTS $database WITH (FORCE)"
  else
    admin_sql -e "DROP DATABASE IF EXISTS $database"
  fi
}
trap 'stop_processes; drop_database >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

for tool in $tools; do
  command -v "$tool" >/dev/null || {
    echo "bench: $tool is missing (apt-get install wrk postgresql-client mariadb-client)" >&2
    exit 1
  }
done

cargo build --release --quiet -p tasks-api -p rds-iam-emulator
drop_database
if [[ $engine == postgres ]]; then
  admin_sql -c "CREATE DATABASE $database"
else
  admin_sql -e "CREATE DATABASE $database CHARACTER SET utf8mb4"
fi
APP__DATABASE__URL=$database_url APP__LOG__LEVEL=warn target/release/tasks-api migrate up >/dev/null

# The user the service logs in as through the emulator, which lets in only IAM users: made one, once the emulator has
# created the role rds_iam, with the operator's own command (on MySQL and MariaDB, outside RDS, the user is created by
# hand first, without a password). It gets DML on tasks only, so the service runs without migrating.
iam_user=tasks_bench_iam
provision_iam_user() {
  local admin_url=$database_url
  if [[ $engine == mariadb ]]; then
    admin_sql -e "CREATE USER IF NOT EXISTS '$iam_user'@'%'"
    admin_url="$database_url?ssl-mode=DISABLED"   # the local MariaDB has no TLS
  fi
  TASKS_ADMIN_URL=$admin_url target/release/tasks-api admin provision-db-user --db-user "$iam_user" >/dev/null
}

# Starts the service in mode $1 (password, iam-direct, or iam through a fresh emulator) and waits until it is ready.
start_service() {
  local mode=$1
  local -a environment=(APP__DATABASE__MAX_CONNECTIONS="$pool" APP__SERVER__PORT="$port" APP__LOG__LEVEL=warn)
  if [[ $mode == iam ]]; then
    printf '[default]\naws_access_key_id = AKIABENCHMARK0000001\naws_secret_access_key = bench/secret\n' \
      >"$work/credentials"
    target/release/rds-iam-emulator --listen "127.0.0.1:$emulator_port" --upstream "$server_url" \
      --credentials "$work/credentials" --tls-dir "$work" >"$work/emulator.log" 2>&1 &
    emulator_pid=$!
    for _ in $(seq 50); do [[ -s $work/ca.pem ]] && break; sleep 0.1; done
    provision_iam_user
    environment+=(APP__DATABASE__AUTH=iam APP__DATABASE__MIGRATE_ON_START=false
      APP__DATABASE__URL="${server_url%%://*}://$iam_user@127.0.0.1:$emulator_port/$database"
      APP__DATABASE__TLS__ROOT_CERT="$work/ca.pem" APP__DATABASE__IAM__REGION=us-east-1
      AWS_ACCESS_KEY_ID=AKIABENCHMARK0000001 AWS_SECRET_ACCESS_KEY=bench/secret AWS_EC2_METADATA_DISABLED=true)
  elif [[ $mode == iam-direct ]]; then
    # The local server's certificate is a self-signed snakeoil one: `require` encrypts as password mode's `prefer` does.
    environment+=(APP__DATABASE__AUTH=iam APP__DATABASE__URL="$database_url" APP__DATABASE__TLS__MODE=require
      APP__DATABASE__IAM__ALLOW_WEAKER_TLS=true
      APP__DATABASE__IAM__REGION=us-east-1
      AWS_ACCESS_KEY_ID=AKIABENCHMARK0000001 AWS_SECRET_ACCESS_KEY=bench/secret AWS_EC2_METADATA_DISABLED=true)
  else
    environment+=(APP__DATABASE__URL="$database_url")
  fi
  env "${environment[@]}" target/release/tasks-api >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null && return 0
    sleep 0.1
  done
  cat "$work/server.log" "$work/emulator.log" 2>/dev/null
  exit 1
}

if [[ $engine == postgres ]]; then
  database_sql <<'SQL'
INSERT INTO tasks (id, name) SELECT gen_random_uuid(), 'seeded ' || n FROM generate_series(1, 10000) AS n;
CREATE TABLE bench_ids AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM tasks;
CREATE UNIQUE INDEX ON bench_ids (n);
VACUUM ANALYZE;
SQL
  database_sql -c "SELECT id FROM bench_ids ORDER BY n" >"$work/ids.txt"
else
  database_sql >/dev/null <<'SQL'
INSERT INTO tasks (id, name) SELECT UNHEX(MD5(CONCAT(seq, RAND()))), CONCAT('seeded ', seq) FROM seq_1_to_10000;
ANALYZE TABLE tasks;
SQL
  database_sql -e "SELECT LOWER(INSERT(INSERT(INSERT(INSERT(HEX(id), 9, 0, '-'), 14, 0, '-'), 19, 0, '-'), 24, 0, '-')) FROM tasks" >"$work/ids.txt"
  # mysqlslap has no random variables: W2's lookups are written out, in random order, one statement per seeded id.
  shuf "$work/ids.txt" | awk '{ gsub("-", ""); print "SELECT id, name FROM tasks WHERE id = X\x27" $1 "\x27 LIMIT 1;" }' \
    >"$work/select_by_id.sql"
fi
export BENCH_IDS="$work/ids.txt"
# wrk prints "Requests/sec:", a latency distribution (with --latency) and "Non-2xx or 3xx responses:" when any.
run_wrk() {
  local script=$1 path=$2
  wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "bench/wrk/$script" "http://127.0.0.1:$port$path" >"$work/wrk.txt"
  local rps p50 p99 errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
  errors=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$work/wrk.txt")
  local socket_errors
  socket_errors=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/wrk.txt")
  echo "$rps ${p50:-?} ${p99:-?} $(( ${errors:-0} + ${socket_errors:-0} ))"
}

# Statements a second the database sustains for workload SQL file $1 with $pool clients.
run_ceiling() {
  if [[ $engine == postgres ]]; then
    pgbench -n -M prepared -c "$pool" -j 2 -T "$seconds" -f "bench/pgbench/$1" "$database_url" 2>/dev/null \
      | awk '/^tps = / {print $3}'
    return
  fi
  local file=bench/mysqlslap/$1
  [[ -e $file ]] || file=$work/$1
  # mysqlslap runs a number of statements, not a duration: a short probe sizes the real run to about $seconds.
  local probe rate
  probe=$(slap_seconds "$file" $((pool * 500)))
  rate=$(awk -v n=$((pool * 500)) -v t="$probe" 'BEGIN { print int(n / t) }')
  local statements=$(( rate * seconds / pool * pool ))
  awk -v n="$statements" -v t="$(slap_seconds "$file" "$statements")" 'BEGIN { print n / t }'
}

# Seconds mysqlslap takes to run $2 statements of file $1 over $pool connections.
slap_seconds() {
  mysqlslap "${server_options[@]}" --create-schema="$database" \
    --query="$1" --delimiter=";" --concurrency="$pool" --iterations=1 --number-of-queries="$2" \
    | awk '/Average number of seconds/ {print $(NF - 1)}'
}

# CPU seconds a process has used so far (user + system), from /proc: shows where a workload's cost lies.
cpu_seconds() {
  if [[ -z $1 ]]; then echo 0; return; fi
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

# CPU µs per request between two readings.
per_request() {
  awk -v a="$1" -v b="$2" -v r="$3" -v s="$seconds" 'BEGIN { printf "%.1f", (b - a) * 1e6 / (r * s) }'
}

workloads=("W1 POST /tasks|post.lua|/tasks|insert.sql"
           "W2 GET /tasks/{id}|get_by_id.lua|/tasks|select_by_id.sql"
           "W3 GET /tasks?limit=50|list.lua|/tasks?limit=50|list.sql")
declare -A ceiling rate
for workload in "${workloads[@]}"; do
  IFS='|' read -r name _ _ sql <<<"$workload"
  ceiling[$name]=$(run_ceiling "$sql")
done

for mode in $modes; do
  start_service "$mode"
  echo
  echo "engine: $engine, mode: $mode"
  printf '%-28s %10s %9s %9s %8s %14s %15s %12s %7s\n' \
    workload req/s p50 p99 non-2xx service-µs/req emulator-µs/req ceiling-tps ratio
  for workload in "${workloads[@]}"; do
    IFS='|' read -r name script path _ <<<"$workload"
    # Each workload starts without the checkpoint debt of the inserts before it (W1 writes ~100k rows), which would
    # otherwise stall the database for seconds in the middle of a later workload on a slow disk.
    [[ $engine == postgres ]] && admin_sql -c CHECKPOINT
    service_before=$(cpu_seconds "$server_pid")
    emulator_before=$(cpu_seconds "$emulator_pid")
    read -r rps p50 p99 errors <<<"$(run_wrk "$script" "$path")"
    service_cost=$(per_request "$service_before" "$(cpu_seconds "$server_pid")" "$rps")
    emulator_cost=-
    [[ -n $emulator_pid ]] && emulator_cost=$(per_request "$emulator_before" "$(cpu_seconds "$emulator_pid")" "$rps")
    tps=${ceiling[$name]}
    rate[$mode,$name]=$rps
    ratio=$(awk -v a="$rps" -v b="$tps" 'BEGIN { printf "%.2f", a / b }')
    printf '%-28s %10.0f %9s %9s %8s %14s %15s %12.0f %7s\n' \
      "$name" "$rps" "$p50" "$p99" "$errors" "$service_cost" "$emulator_cost" "$tps" "$ratio"
    if [[ $errors != 0 ]]; then
      # Failed requests are a finding: show what the service (and emulator) logged about them.
      grep -hE 'WARN|ERROR' "$work/server.log" "$work/emulator.log" 2>/dev/null | tail -5 | cut -c1-400 || true
    fi
  done
  peak_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$server_pid/status")
  printf 'service peak RSS: %.1f MiB (pool %s connections, %s wrk connections, %ss a workload)\n' \
    "$(awk -v k="$peak_kib" 'BEGIN { print k / 1024 }')" "$pool" "$connections" "$seconds"
  stop_processes
done

if [[ " $modes " == *" password "* ]]; then
  echo
  for mode in $modes; do
    [[ $mode == password ]] && continue
    for workload in "${workloads[@]}"; do
      IFS='|' read -r name _ <<<"$workload"
      awk -v n="$name" -v m="$mode" -v i="${rate[$mode,$name]}" -v p="${rate[password,$name]}" \
        'BEGIN { printf "%-28s %s / password throughput: %.2f\n", n, m, i / p }'
    done
  done
fi
