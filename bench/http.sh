#!/usr/bin/env bash
# HTTP benchmark of tasks-api against PostgreSQL, beside pgbench running the same SQL (the database's ceiling here).
#
#   bench/http.sh            # needs wrk (apt-get install wrk), pgbench and a PostgreSQL at $BENCH_ADMIN_URL
#
# Seeds 10,000 tasks, then runs W1 POST /tasks, W2 GET /tasks/{id} (random seeded ids), W3 GET /tasks?limit=50 with
# 64 connections for $BENCH_SECONDS each, and pgbench (16 clients, prepared) on each workload's SQL. Prints req/s,
# p50, p99, non-2xx responses, the ratio to pgbench, and the service's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."

admin_url=${BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
seconds=${BENCH_SECONDS:-10}
connections=${BENCH_CONNECTIONS:-64}
pool=${BENCH_POOL:-16}
port=${BENCH_PORT:-18080}
database=tasks_bench
database_url="${admin_url%/*}/$database"
work=$(mktemp -d)
trap 'kill "$server_pid" 2>/dev/null || true; wait 2>/dev/null || true; psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

for tool in wrk pgbench psql; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install wrk postgresql-client)" >&2; exit 1; }
done

cargo build --release --quiet -p tasks-api
psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" -c "CREATE DATABASE $database"

APP__DATABASE__URL=$database_url APP__DATABASE__MAX_CONNECTIONS=$pool APP__SERVER__PORT=$port \
  APP__LOG__LEVEL=warn target/release/tasks-api >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null || { cat "$work/server.log"; exit 1; }

psql -q "$database_url" <<'SQL'
INSERT INTO tasks (id, name) SELECT gen_random_uuid(), 'seeded ' || n FROM generate_series(1, 10000) AS n;
CREATE TABLE bench_ids AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM tasks;
CREATE UNIQUE INDEX ON bench_ids (n);
VACUUM ANALYZE;
SQL
psql -Atq "$database_url" -c "SELECT id FROM bench_ids ORDER BY n" >"$work/ids.txt"
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

run_pgbench() {
  pgbench -n -M prepared -c "$pool" -j 2 -T "$seconds" -f "bench/pgbench/$1" "$database_url" 2>/dev/null \
    | awk '/^tps = / {print $3}'
}

# CPU seconds the service has used so far (user + system), from /proc: shows where a workload's cost lies.
service_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$server_pid/stat"
}

printf '%-28s %10s %9s %9s %8s %14s %12s %7s\n' workload req/s p50 p99 non-2xx service-µs/req pgbench-tps ratio
for workload in "W1 POST /tasks|post.lua|/tasks|insert.sql" \
                "W2 GET /tasks/{id}|get_by_id.lua|/tasks|select_by_id.sql" \
                "W3 GET /tasks?limit=50|list.lua|/tasks?limit=50|list.sql"; do
  IFS='|' read -r name script path sql <<<"$workload"
  cpu_before=$(service_cpu)
  read -r rps p50 p99 errors <<<"$(run_wrk "$script" "$path")"
  cpu_per_request=$(awk -v a="$cpu_before" -v b="$(service_cpu)" -v r="$rps" -v s="$seconds" \
    'BEGIN { printf "%.1f", (b - a) * 1e6 / (r * s) }')
  tps=$(run_pgbench "$sql")
  ratio=$(awk -v a="$rps" -v b="$tps" 'BEGIN { printf "%.2f", a / b }')
  printf '%-28s %10.0f %9s %9s %8s %14s %12.0f %7s\n' "$name" "$rps" "$p50" "$p99" "$errors" "$cpu_per_request" "$tps" "$ratio"
done

peak_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$server_pid/status")
printf 'service peak RSS: %.1f MiB (pool %s connections, %s wrk connections, %ss a workload)\n' \
  "$(awk -v k="$peak_kib" 'BEGIN { print k / 1024 }')" "$pool" "$connections" "$seconds"
