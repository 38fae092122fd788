#!/usr/bin/env bash
# pgbench -S (select-only) against PostgreSQL directly, through PgBouncer (session mode)
# and through isogate's database front, in one run on this machine; then the same with
# a new connection per transaction (-C), which measures connection setup (TLS, sign-in
# and, for isogate, JWT verification). Every client connection is TLS; PgBouncer and
# isogate reach PostgreSQL over plain loopback TCP with a tenant login role.
#
#   benches/pgbench.sh [seconds] [clients]      (defaults: 10 s, 8 clients)
#
# Needs Debian's postgresql and pgbouncer, and openssl; runs as root (PostgreSQL and
# PgBouncer then run as the postgres user) or as any user.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
clients=${2:-8}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
run_as=()
[ "$(id -u)" -eq 0 ] && run_as=(setpriv --reuid=postgres --regid=postgres --init-groups --)

work=$(mktemp -d /tmp/isogate-pgbench.XXXXXX)
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg_port=$(free_port); bouncer_port=$(free_port); gw_port=$(free_port); http_port=$(free_port); admin_port=$(free_port)
tls=$PWD/tests/fixtures/tls
install -m 600 "$tls/a.pem" "$work/server.pem"; install -m 600 "$tls/a.key" "$work/server.key"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$work/server.pem" "$work/server.key"

master=$(head -c 48 /dev/urandom | base64 -w0)
issuer_secret=$(head -c 48 /dev/urandom | base64 -w0)
role=tenant_bench
password=$(printf %s "$role" | openssl dgst -sha256 -hmac "$master" -r | cut -d' ' -f1)

"${run_as[@]}" "$bin/initdb" -U postgres --auth-local=trust --auth-host=scram-sha-256 --no-sync -D "$work/data" >/dev/null
"${run_as[@]}" "$bin/postgres" -D "$work/data" -p "$pg_port" -k "$work" -c listen_addresses=127.0.0.1 \
  -c ssl=on -c ssl_cert_file="$work/server.pem" -c ssl_key_file="$work/server.key" \
  -c max_connections=200 -c fsync=off >"$work/pg.log" 2>&1 &
pids+=($!)
psql_su() { "$bin/psql" -X -q -h "$work" -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 "$@"; }
for _ in $(seq 100); do psql_su -d postgres -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
psql_su -d postgres -c 'CREATE DATABASE app' >/dev/null
psql_su -d app -f deploy/postgres/00-database.sql >/dev/null
psql_su -d app -v tenant=bench -v password="$password" -f deploy/postgres/10-tenant-role.sql >/dev/null
psql_su -d app -v tenant=bench -f deploy/postgres/20-tenant-schema.sql >/dev/null
psql_su -d app -c "ALTER ROLE $role SET search_path = company_bench" >/dev/null
PGPASSWORD=$password "$bin/pgbench" -q -i -s 10 -h 127.0.0.1 -p "$pg_port" -U "$role" app >/dev/null 2>&1

# PgBouncer, session pooling, TLS to clients.
cat >"$work/pgbouncer.ini" <<EOF
[databases]
app = host=127.0.0.1 port=$pg_port dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $work/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 20
client_tls_sslmode = require
client_tls_cert_file = $work/server.pem
client_tls_key_file = $work/server.key
logfile = $work/pgbouncer.log
EOF
printf '"%s" "%s"\n' "$role" "$password" >"$work/userlist.txt"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$work/pgbouncer.ini" "$work/userlist.txt"
"${run_as[@]}" pgbouncer "$work/pgbouncer.ini" >/dev/null 2>&1 &
pids+=($!)

# isogate, with one prod database listener.
printf %s "$issuer_secret" >"$work/issuer.secret"
printf %s "$master" >"$work/master.secret"
cat >"$work/isogate.toml" <<EOF
[server]
threads = 2
[admin]
address = "127.0.0.1:$admin_port"
[audit]
output = "$work/audit.log"
[[listeners]]
address = "127.0.0.1:$http_port"
[[certificates]]
cert_file = "$work/server.pem"
key_file = "$work/server.key"
server_names = ["a.test"]
[[issuers]]
name = "bench"
issuer = "https://bench.test"
audiences = ["isogate-bench"]
algorithms = ["HS256"]
secret_file = "$work/issuer.secret"
[environments.prod]
default_pool = "app"
db_schema = "company_{tenant}"
db_pool = "pg"
[pools.app]
servers = ["127.0.0.1:1"]
[[routes]]
name = "app"
environment = "prod"
[[database_listeners]]
address = "127.0.0.1:$gw_port"
environment = "prod"
[databases.pg]
host = "127.0.0.1"
port = $pg_port
database = "app"
user = "tenant_{tenant}"
password_file = "$work/master.secret"
max_server_connections = 20
EOF
cargo build --release --quiet
RUST_LOG=warn target/release/isogate run -c "$work/isogate.toml" 2>"$work/isogate.log" &
pids+=($!)

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
head=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
body=$(printf '{"iss":"https://bench.test","aud":"isogate-bench","iat":%d,"exp":%d,"env":"prod","tenant":"bench","sub":"bench-user","roles":["user"]}' "$now" $((now + 3600)) | b64url)
sig=$(printf %s "$head.$body" | openssl dgst -sha256 -hmac "$issuer_secret" -binary | b64url)
token="$head.$body.$sig"
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$gw_port) 2>/dev/null && break; sleep 0.1; done

tps() { # name port password extra-flags...
  local name=$1 port=$2 pass=$3; shift 3
  PGPASSWORD=$pass PGSSLMODE=require "$bin/pgbench" -n -S -T "$seconds" -c "$clients" -j 2 "$@" \
    -h 127.0.0.1 -p "$port" -U "$role" app 2>&1 | awk -v n="$name" '/^tps/ { printf "%s %.0f\n", n, $3 }'
}
echo "pgbench -S, $clients clients, $seconds s each, TLS to every front"
results=$(
  tps direct "$pg_port" "$password"
  tps pgbouncer "$bouncer_port" "$password"
  tps isogate "$gw_port" "$token"
  tps direct-C "$pg_port" "$password" -C
  tps pgbouncer-C "$bouncer_port" "$password" -C
  tps isogate-C "$gw_port" "$token" -C
)
echo "$results" | awk '
  { tps[$1] = $2; order[NR] = $1 }
  END {
    for (i = 1; i <= NR; i++) {
      n = order[i]; base = (n ~ /-C$/) ? tps["direct-C"] : tps["direct"]
      printf "%-12s %8.0f tps  %.2fx direct\n", n, tps[n], tps[n] / base
    }
  }'
