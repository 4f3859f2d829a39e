#!/usr/bin/env bash
# Soak test of tasks-api with IAM authentication through the RDS IAM emulator, on PostgreSQL (not run in CI: it takes
# 10 minutes). Tokens live 60 s (the service signs them so and the emulator refuses older ones) and pooled connections
# 120 s, so that under load all along the service renews tokens and replaces connections, each new one authenticated
# with the current token: a leak or a failed renewal shows as failed requests or growing memory.
#
#   bench/soak.sh    # needs wrk (apt-get install wrk) and psql
#
# The load is bench/wrk/mixed.lua (1 in 5 POST /tasks, 3 in 5 GET /tasks/{id} of 10,000 seeded tasks, 1 in 5
# GET /tasks?limit=50) at about half the service's peak. wrk has no fixed rate (wrk2 is not packaged), so the script
# first measures the peak (64 connections), then gives each of BENCH_SOAK_CONNECTIONS (16) connections a wait before
# every request, sized for half the peak; a calibration run at that wait measures the time a request itself takes, and
# the wait is shortened by it. Requests slower than wrk's 2 s timeout count as failed.
#
# It samples the service's and the emulator's RSS, and the age of the oldest database session, every 10 s and prints
# them as a table, then the requests, the failed ones (non-2xx and socket errors), the token renewals the service
# logged, and the service's RSS growth after the first minute, next to the goals: 0 failed, <= 2 MiB growth (printed,
# not asserted).
#
# BENCH_SOAK_SECONDS (600) is the soak's length, BENCH_SOAK_PEAK_SECONDS (10) each of the two runs before it;
# BENCH_POOL (16), BENCH_PORT (18090), BENCH_EMULATOR_PORT (15443) and BENCH_ADMIN_URL as in bench/http.sh (other
# default ports, so that both can run at once). BENCH_RESULTS=1 also writes the output to
# bench/results/DATE-postgres-soak-SECONDSs.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

admin_url=${BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
server_url=${admin_url%/*}
seconds=${BENCH_SOAK_SECONDS:-600}
probe_seconds=${BENCH_SOAK_PEAK_SECONDS:-10}
connections=${BENCH_SOAK_CONNECTIONS:-16}
pool=${BENCH_POOL:-16}
port=${BENCH_PORT:-18090}
emulator_port=${BENCH_EMULATOR_PORT:-15443}
token_lifetime=60
connection_lifetime=120
database=tasks_soak
database_url=$server_url/$database
work=$(mktemp -d)
server_pid=
emulator_pid=
wrk_pid=
cleanup() {
  local pids="$wrk_pid $server_pid $emulator_pid"
  for pid in $pids; do kill "$pid" 2>/dev/null || true; done
  # These processes only: a bare `wait` would also wait for BENCH_RESULTS's tee, which ends only when this shell does.
  for pid in $pids; do wait "$pid" 2>/dev/null || true; done
  psql -Atq "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

for tool in wrk psql; do
  command -v "$tool" >/dev/null || {
    echo "soak: $tool is missing (apt-get install wrk postgresql-client)" >&2
    exit 1
  }
done
if [[ ${BENCH_RESULTS:-} == 1 ]]; then
  exec > >(tee "bench/results/$(date +%F)-postgres-soak-${seconds}s.txt")
fi
echo "# $(date -u '+%F %H:%M') UTC, commit $(git describe --always --dirty 2>/dev/null || echo unknown)," \
  "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

cargo build --release --quiet -p tasks-api -p rds-iam-emulator
psql -Atq "$admin_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" -c "CREATE DATABASE $database"
APP__DATABASE__URL=$database_url APP__LOG__LEVEL=warn target/release/tasks-api migrate up >/dev/null
psql -Atq "$database_url" <<'SQL'
INSERT INTO tasks (id, name) SELECT gen_random_uuid(), 'seeded ' || n FROM generate_series(1, 10000) AS n;
VACUUM ANALYZE;
SQL
psql -Atq "$database_url" -c "SELECT id FROM tasks" >"$work/ids.txt"
export BENCH_IDS="$work/ids.txt"

printf '[default]\naws_access_key_id = AKIABENCHMARK0000001\naws_secret_access_key = bench/secret\n' \
  >"$work/credentials"
target/release/rds-iam-emulator --listen "127.0.0.1:$emulator_port" --upstream "$server_url" \
  --credentials "$work/credentials" --tls-dir "$work" --max-token-age "$token_lifetime" >"$work/emulator.log" 2>&1 &
emulator_pid=$!
for _ in $(seq 50); do [[ -s $work/ca.pem ]] && break; sleep 0.1; done
# The emulator lets in only users granted rds_iam (it creates the role at start): one made with the operator's own
# command, with DML on tasks only.
iam_user=tasks_soak_iam
TASKS_ADMIN_URL=$database_url target/release/tasks-api admin provision-db-user --db-user "$iam_user" >/dev/null
# rds_iam at info: the service logs each token renewal, which the summary counts. Its user has DML on tasks only, so
# it does not migrate (the administrator did, above).
env APP__DATABASE__MAX_CONNECTIONS="$pool" APP__SERVER__PORT="$port" APP__LOG__LEVEL=warn,rds_iam=info \
  APP__DATABASE__MIGRATE_ON_START=false APP__DATABASE__AUTH=iam APP__DATABASE__URL="${server_url%%://*}://$iam_user@127.0.0.1:$emulator_port/$database" \
  APP__DATABASE__TLS__ROOT_CERT="$work/ca.pem" APP__DATABASE__IAM__REGION=us-east-1 \
  APP__DATABASE__IAM__TOKEN_LIFETIME_SECS="$token_lifetime" APP__DATABASE__MAX_LIFETIME_SECS="$connection_lifetime" \
  AWS_ACCESS_KEY_ID=AKIABENCHMARK0000001 AWS_SECRET_ACCESS_KEY=bench/secret AWS_EC2_METADATA_DISABLED=true \
  target/release/tasks-api >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null || { cat "$work/server.log" "$work/emulator.log"; exit 1; }

# Runs the mix with $1 connections for $2 seconds, waiting $3 ms before each request (empty: no wait), into
# $work/wrk.txt; in the background, as the soak samples while it runs.
start_wrk() {
  BENCH_DELAY_MS=$3 wrk -t2 -c"$1" -d"$2s" -s bench/wrk/mixed.lua "http://127.0.0.1:$port" >"$work/wrk.txt" &
  wrk_pid=$!
}

finish_wrk() {
  wait "$wrk_pid"
  wrk_pid=
}

# The last wrk run's requests a second.
wrk_rate() {
  awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt"
}

start_wrk 64 "$probe_seconds" ''
finish_wrk
peak=$(wrk_rate)
goal=$(awk -v p="$peak" 'BEGIN { print p / 2 }')
# At a wait of w ms, each connection makes one request every w + t ms, t being the time a request takes at that load.
first_wait=$(awk -v c="$connections" -v g="$goal" 'BEGIN { printf "%.2f", c * 1000 / g }')
start_wrk "$connections" "$probe_seconds" "$first_wait"
finish_wrk
calibration=$(wrk_rate)
wait_ms=$(awk -v c="$connections" -v g="$goal" -v r="$calibration" -v w="$first_wait" \
  'BEGIN { t = c * 1000 / r - w; w = c * 1000 / g - t; printf "%.2f", (w > 0 ? w : 0) }')
printf 'peak %.0f req/s (64 connections); goal %.0f req/s: %s connections waiting %s ms before each request' \
  "$peak" "$goal" "$connections" "$wait_ms"
printf ' (calibration: %.0f req/s at %s ms)\n' "$calibration" "$first_wait"
echo "tokens live ${token_lifetime}s, connections ${connection_lifetime}s, pool $pool; soak of ${seconds}s"

rss_mib() {
  awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# Seconds since the oldest session on the soak's database began: stays near the connections' lifetime when they
# are replaced.
oldest_session() {
  psql -Atq "$admin_url" -c "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(backend_start))::int, 0)
    FROM pg_stat_activity WHERE datname = '$database'"
}

echo
printf '%6s %16s %17s %19s\n' time service-RSS-MiB emulator-RSS-MiB oldest-session-s
start_wrk "$connections" "$seconds" "$wait_ms"
start=$SECONDS
next=0
while kill -0 "$wrk_pid" 2>/dev/null; do
  if (( SECONDS - start >= next )); then
    printf '%5ds %16s %17s %19s\n' "$((SECONDS - start))" "$(rss_mib "$server_pid")" "$(rss_mib "$emulator_pid")" \
      "$(oldest_session)" | tee -a "$work/samples.txt"
    next=$((next + 10))
  fi
  sleep 0.2
done
finish_wrk

requests=$(awk '/ requests in / {print $1}' "$work/wrk.txt")
non_2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$work/wrk.txt")
socket_errors=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/wrk.txt")
echo
printf 'requests: %s (%.0f req/s, %.0f%% of the peak)\n' "$requests" "$(wrk_rate)" \
  "$(awk -v r="$(wrk_rate)" -v p="$peak" 'BEGIN { print r * 100 / p }')"
printf 'failed: %s (non-2xx %s, socket errors %s; goal 0)\n' \
  "$(( ${non_2xx:-0} + ${socket_errors:-0} ))" "${non_2xx:-0}" "${socket_errors:-0}"
grep -i 'socket errors' "$work/wrk.txt" || true
echo "token renewals logged: $(grep -c 'credential renewed' "$work/server.log" || true)"
awk '$1 + 0 >= 60 && !first { first = $2 } { last = $2 }
  END { if (first) printf "service RSS growth after the first minute: %+.1f MiB (%.1f to %.1f; goal <= 2)\n",
    last - first, first, last; else print "service RSS growth after the first minute: - (no sample after 60 s)" }' \
  "$work/samples.txt"
if grep -qE 'WARN|ERROR' "$work/server.log" "$work/emulator.log"; then
  echo "what the service and the emulator logged at WARN or ERROR (last 10):"
  grep -hE 'WARN|ERROR' "$work/server.log" "$work/emulator.log" | tail -10 | cut -c1-400
fi
