#!/usr/bin/env bash
# HTTP benchmark of tasks-api against PostgreSQL or MariaDB, beside the database's own load tool running the same SQL
# (pgbench, or mysqlslap): the database's ceiling here; and, on PostgreSQL, beside a peer: the same API in another
# stack (Node.js + Fastify + node-postgres), on the same database, with the same load.
#
#   bench/http.sh                       # PostgreSQL: needs wrk (apt-get install wrk), pgbench, psql, node and npm
#   BENCH_ENGINE=mariadb bench/http.sh  # MariaDB/MySQL: needs wrk, mysqlslap, mariadb (mariadb-client)
#
# Seeds 10,000 tasks, then runs W1 POST /tasks, W2 GET /tasks/{id} (random seeded ids), W3 GET /tasks?limit=50 with
# 64 connections for $BENCH_SECONDS each, and the ceiling tool (16 clients) on each workload's SQL. Prints req/s,
# p50, p99, non-2xx responses, CPU time per request (from /proc, over the workload's run, divided by the requests
# wrk completed), the ratio to the ceiling, and peak RSS.
#
# BENCH_MODES="password iam-direct iam" (the default) runs the service three times: with password authentication
# straight to PostgreSQL; with IAM authentication straight to PostgreSQL (the local server trusts the connection, so the
# token goes unchecked, but the service signs, renews and installs tokens exactly as in production: this isolates what
# IAM costs the service); and with IAM authentication through the RDS IAM emulator (TLS verify-full, every token
# checked), where the emulator's relay adds a process on the same cores. It then compares each IAM mode with password.
# MariaDB runs password and iam only: it checks passwords itself, so a token cannot go straight to it unchecked.
# BENCH_MODES=iam-reader runs the service through the emulator as an Aurora cluster (two instances, a cluster endpoint
# for the writer's pool and a reader endpoint for a reader pool, APP__DATABASE__READER__URL) and says after each
# workload how many operations each pool ran (db_operations_total): W2 and W3 should leave the writer's at nothing.
#
# BENCH_PEER names the peer's folder (default ../shared/bench-peers/node-fastify beside the project; empty: no peer;
# PostgreSQL only). It is copied to ${XDG_CACHE_HOME:-~/.cache}/tasks-bench/, as npm ci writes node_modules/ beside
# it, and started in every mode with a password (the peer's own IAM mode is not measured), a pool of $BENCH_POOL
# and one Node.js process, on BENCH_PEER_PORT (18081). It talks to PostgreSQL in clear (its pool has ssl: false), so
# the service's password mode does too (BENCH_PASSWORD_TLS, default disable; `prefer`, the service's default, uses
# the local server's TLS and costs the service a few per cent).
# Each workload runs on the service, then at once on the peer, so that a busy machine weighs on both alike; the
# script ends with service / peer ratios for req/s and CPU per request, p99 side by side, non-2xx and peak RSS, next
# to the goals the project aims at (printed, not asserted). Before it is measured, each target (service or peer)
# must create a task and find it by the id its POST answered (the service answers an object, the peer a bare JSON
# string) and find a seeded task; then it gets a second of each workload, unmeasured, as a warm-up.
#
# BENCH_WORKERS sets the service's actix-web worker threads (APP__SERVER__WORKERS; unset: the service's default, one
# per core). The peer is one event loop on one thread: BENCH_WORKERS=1 compares the service with it loop for loop.
#
# BENCH_RESULTS=1 also writes the output to bench/results/DATE-ENGINE[-peer].txt.
set -euo pipefail
cd "$(dirname "$0")/.."

engine=${BENCH_ENGINE:-postgres}
case $engine in
  postgres)
    admin_url=${BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
    default_modes="password iam-direct iam"
    peer_source=${BENCH_PEER-../shared/bench-peers/node-fastify}
    tools="wrk pgbench psql${peer_source:+ node npm}" ;;
  mariadb)
    admin_url=${BENCH_ADMIN_URL:-mysql://root@127.0.0.1:3306/mysql}
    default_modes="password iam"
    peer_source=
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
workers=${BENCH_WORKERS:-}
port=${BENCH_PORT:-18080}
emulator_port=${BENCH_EMULATOR_PORT:-15433}
peer_port=${BENCH_PEER_PORT:-18081}
modes=${BENCH_MODES:-$default_modes}
database=tasks_bench
database_url="$server_url/$database"
work=$(mktemp -d)
server_pid=
emulator_pid=
peer_pid=
stop_processes() {
  local pids="$server_pid $emulator_pid $peer_pid"
  for pid in $pids; do kill "$pid" 2>/dev/null || true; done
  # These processes only: a bare `wait` would also wait for BENCH_RESULTS's tee, which ends only when this shell does.
  for pid in $pids; do wait "$pid" 2>/dev/null || true; done
  server_pid='' emulator_pid='' peer_pid=''
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
    echo "bench: $tool is missing (apt-get install wrk postgresql-client mariadb-client nodejs npm)" >&2
    exit 1
  }
done
if [[ -n $peer_source ]]; then
  [[ -f $peer_source/run.sh ]] || {
    echo "bench: no peer at BENCH_PEER=$peer_source (BENCH_PEER= runs without it)" >&2
    exit 1
  }
  peer_dir=${XDG_CACHE_HOME:-$HOME/.cache}/tasks-bench/$(basename "$peer_source")
  mkdir -p "$peer_dir"
  # Timestamps kept: the peer's run.sh reinstalls its packages only when package-lock.json is newer than them.
  cp -R --preserve=timestamps "$peer_source/." "$peer_dir/"
  chmod -R u+w "$peer_dir"   # the source may be read-only, and the copy's files are overwritten next time
fi
if [[ ${BENCH_RESULTS:-} == 1 ]]; then
  exec > >(tee "bench/results/$(date +%F)-$engine${peer_source:+-peer}.txt")
fi
echo "# $(date -u '+%F %H:%M') UTC, commit $(git describe --always --dirty 2>/dev/null || echo unknown)," \
  "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), service workers ${workers:-default}"

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
  local -a environment=(APP__DATABASE__MAX_CONNECTIONS="$pool" APP__SERVER__PORT="$port" APP__LOG__LEVEL=warn
    ${workers:+APP__SERVER__WORKERS="$workers"})
  if [[ $mode == iam || $mode == iam-reader ]]; then
    printf '[default]\naws_access_key_id = AKIABENCHMARK0000001\naws_secret_access_key = bench/secret\n' \
      >"$work/credentials"
    local -a endpoints=(--listen "127.0.0.1:$emulator_port")
    if [[ $mode == iam-reader ]]; then
      # The cluster endpoint where the single endpoint would be; the instances and the reader endpoint above it.
      endpoints=(--cluster-listen "127.0.0.1:$emulator_port" --instance "a=127.0.0.1:$((emulator_port + 1))"
        --instance "b=127.0.0.1:$((emulator_port + 2))" --reader-listen "127.0.0.1:$((emulator_port + 3))")
      environment+=(
        APP__DATABASE__READER__URL="${server_url%%://*}://$iam_user@127.0.0.1:$((emulator_port + 3))/$database")
    fi
    target/release/rds-iam-emulator "${endpoints[@]}" --upstream "$server_url" \
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
    environment+=(APP__DATABASE__URL="$database_url" APP__DATABASE__TLS__MODE="${BENCH_PASSWORD_TLS:-disable}")
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

# Starts the peer on the benchmark's database and waits until it answers (the first start runs npm ci: allow 2 min).
start_peer() {
  local credentials=${server_address%%@*}
  local password=bench   # any password does on a server that trusts local connections
  [[ $credentials == *:* ]] && password=${credentials#*:}
  PGHOST=${server_host_port%:*} PGPORT=${server_host_port##*:} PGUSER=${credentials%%:*} PGPASSWORD=$password \
    PGDATABASE=$database POOL_SIZE=$pool "$peer_dir/run.sh" "$peer_port" >"$work/peer.log" 2>&1 &
  peer_pid=$!
  for _ in $(seq 1200); do
    curl -fs "http://127.0.0.1:$peer_port/tasks?limit=1" >/dev/null && return 0
    kill -0 "$peer_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$work/peer.log"
  exit 1
}

# Whether the target on port $1 creates a task and finds it by the id its POST answered ({"id": ...} from the service,
# a bare JSON string from the peer), and finds a seeded task: else W1 and W2 would measure error responses.
check_target() {
  local base=http://127.0.0.1:$1 id
  id=$(curl -fs -H 'Content-Type: application/json' -d '{"name":"check"}' "$base/tasks" \
    | grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' || true)
  if [[ -z $id ]] || ! curl -fso /dev/null "$base/tasks/$id" \
    || ! curl -fso /dev/null "$base/tasks/$(head -1 "$BENCH_IDS")"; then
    echo "bench: the $2 on port $1 does not create and find tasks" >&2
    exit 1
  fi
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
# wrk prints "N requests in", "Requests/sec:", a latency distribution (with --latency) and "Non-2xx or 3xx responses:"
# when any. Runs script $1 on port $2, path $3.
run_wrk() {
  local script=$1 target_port=$2 path=$3
  wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "bench/wrk/$script" "http://127.0.0.1:$target_port$path" \
    >"$work/wrk.txt"
  local requests rps p50 p99 errors
  requests=$(awk '/ requests in / {print $1}' "$work/wrk.txt")
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
  errors=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$work/wrk.txt")
  local socket_errors
  socket_errors=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/wrk.txt")
  echo "$requests $rps ${p50:-?} ${p99:-?} $(( ${errors:-0} + ${socket_errors:-0} ))"
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

# CPU µs per request between two readings, over $3 requests.
per_request() {
  awk -v a="$1" -v b="$2" -v r="$3" 'BEGIN { printf "%.1f", (b - a) * 1e6 / r }'
}

# Operations each pool of the service has run so far, from its metrics: "writer reader" (0 for a pool it has not).
pool_operations() {
  curl -fs "http://127.0.0.1:$port/metrics" | awk '
    /^db_operations_total\{pool="writer"\}/ { writer = $2 }
    /^db_operations_total\{pool="reader"\}/ { reader = $2 }
    END { print writer + 0, reader + 0 }'
}

# Peak RSS of process $1 so far, in MiB.
peak_rss() {
  awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# A wrk latency (950.00us, 32.80ms, 1.02s) in ms, to compare two of them.
milliseconds() {
  awk -v t="$1" 'BEGIN { n = t + 0; if (t ~ /us$/) n /= 1000; else if (t ~ /[0-9]s$/) n *= 1000; print n }'
}

workloads=("W1 POST /tasks|post.lua|/tasks|insert.sql"
           "W2 GET /tasks/{id}|get_by_id.lua|/tasks|select_by_id.sql"
           "W3 GET /tasks?limit=50|list.lua|/tasks?limit=50|list.sql")
# A second of each workload on port $1, unmeasured: the first measured run then does not also pay for opening the
# pool's connections, nor for the peer's JIT compilation.
warm_up() {
  local workload script path
  for workload in "${workloads[@]}"; do
    IFS='|' read -r _ script path _ <<<"$workload"
    wrk -t2 -c"$connections" -d1s -s "bench/wrk/$script" "http://127.0.0.1:$1$path" >/dev/null
  done
}

declare -A ceiling rate cpu latency failed rss
for workload in "${workloads[@]}"; do
  IFS='|' read -r name _ _ sql <<<"$workload"
  ceiling[$name]=$(run_ceiling "$sql")
done

for mode in $modes; do
  start_service "$mode"
  check_target "$port" service
  warm_up "$port"
  targets=service
  if [[ -n $peer_source ]]; then
    start_peer
    check_target "$peer_port" peer
    warm_up "$peer_port"
    targets+=" peer"
  fi
  echo
  echo "engine: $engine, mode: $mode${peer_source:+, peer: $(basename "$peer_source") ($(node --version), password)}"
  printf '%-24s %-7s %10s %9s %9s %8s %10s %15s %12s %7s\n' \
    workload target req/s p50 p99 non-2xx cpu-µs/req emulator-µs/req ceiling-tps ratio
  for workload in "${workloads[@]}"; do
    IFS='|' read -r name script path _ <<<"$workload"
    for target in $targets; do
      if [[ $target == service ]]; then
        target_port=$port pid=$server_pid relay_pid=$emulator_pid logs=("$work/server.log" "$work/emulator.log")
      else
        target_port=$peer_port pid=$peer_pid relay_pid='' logs=("$work/peer.log")
      fi
      # Each run starts without the checkpoint debt of the inserts before it (W1 writes ~100k rows), which would
      # otherwise stall the database for seconds in the middle of a later run on a slow disk.
      [[ $engine == postgres ]] && admin_sql -c CHECKPOINT
      before=$(cpu_seconds "$pid")
      relay_before=$(cpu_seconds "$relay_pid")
      [[ $mode == iam-reader && $target == service ]] && read -r writer_before reader_before <<<"$(pool_operations)"
      read -r requests rps p50 p99 errors <<<"$(run_wrk "$script" "$target_port" "$path")"
      cost=$(per_request "$before" "$(cpu_seconds "$pid")" "$requests")
      relay_cost=-
      [[ -n $relay_pid ]] && relay_cost=$(per_request "$relay_before" "$(cpu_seconds "$relay_pid")" "$requests")
      tps=${ceiling[$name]}
      rate[$mode,$target,$name]=$rps cpu[$mode,$target,$name]=$cost
      latency[$mode,$target,$name]=$p99 failed[$mode,$target,$name]=$errors
      ratio=$(awk -v a="$rps" -v b="$tps" 'BEGIN { printf "%.2f", a / b }')
      printf '%-24s %-7s %10.0f %9s %9s %8s %10s %15s %12.0f %7s\n' \
        "$name" "$target" "$rps" "$p50" "$p99" "$errors" "$cost" "$relay_cost" "$tps" "$ratio"
      if [[ $mode == iam-reader && $target == service ]]; then
        read -r writer_after reader_after <<<"$(pool_operations)"
        printf '%-24s operations on the writer: %d, on the reader: %d\n' "" \
          $((writer_after - writer_before)) $((reader_after - reader_before))
      fi
      if [[ $errors != 0 ]]; then
        # Failed requests are a finding: show what the target (and emulator) logged about them.
        grep -hiE 'WARN|ERROR' "${logs[@]}" 2>/dev/null | tail -5 | cut -c1-400 || true
      fi
    done
  done
  rss[$mode,service]=$(peak_rss "$server_pid")
  printf 'service peak RSS: %s MiB (pool %s connections, %s wrk connections, %ss a workload)\n' \
    "${rss[$mode,service]}" "$pool" "$connections" "$seconds"
  if [[ -n $peer_pid ]]; then
    rss[$mode,peer]=$(peak_rss "$peer_pid")
    printf 'peer peak RSS: %s MiB\n' "${rss[$mode,peer]}"
  fi
  stop_processes
done

if [[ " $modes " == *" password "* ]]; then
  for mode in $modes; do
    [[ $mode == password ]] && continue
    echo
    for workload in "${workloads[@]}"; do
      IFS='|' read -r name _ <<<"$workload"
      awk -v n="$name" -v m="$mode" -v i="${rate[$mode,service,$name]}" -v p="${rate[password,service,$name]}" \
        'BEGIN { printf "%-28s %s / password throughput: %.2f\n", n, m, i / p }'
    done
  done
fi

if [[ -n $peer_source ]]; then
  for mode in $modes; do
    echo
    echo "service ($mode) / peer, each workload run back to back"
    printf '%-24s %8s %8s %12s %12s %9s %8s\n' workload req/s cpu/req p99-service p99-peer p99-ratio non-2xx
    printf '%-24s %8s %8s %12s %12s %9s %8s\n' goal '>= 1.50' '<= 0.50' '' '' '<= 1.00' '0 / -'
    for workload in "${workloads[@]}"; do
      IFS='|' read -r name _ <<<"$workload"
      service_p99=${latency[$mode,service,$name]} peer_p99=${latency[$mode,peer,$name]}
      awk -v n="$name" -v rs="${rate[$mode,service,$name]}" -v rp="${rate[$mode,peer,$name]}" \
        -v cs="${cpu[$mode,service,$name]}" -v cp="${cpu[$mode,peer,$name]}" -v ls="$service_p99" -v lp="$peer_p99" \
        -v xs="$(milliseconds "$service_p99")" -v xp="$(milliseconds "$peer_p99")" \
        -v f="${failed[$mode,service,$name]} / ${failed[$mode,peer,$name]}" \
        'BEGIN { printf "%-24s %8.2f %8.2f %12s %12s %9.2f %8s\n", n, rs / rp, cs / cp, ls, lp, xs / xp, f }'
    done
    printf 'peak RSS: service %s MiB (goal <= 40), peer %s MiB\n' "${rss[$mode,service]}" "${rss[$mode,peer]}"
  done
fi
