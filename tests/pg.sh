#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests of the PostgreSQL store (tests/store_contract.rs).
#
#   tests/pg.sh run CMD ARGS...   starts a server unless DATABASE_URL is set, runs CMD with
#                                 DATABASE_URL exported, stops the server, exits with CMD's code
#   eval "$(tests/pg.sh start)"   starts one and prints the exports (DATABASE_URL, OFFLOAD_PG_DIR)
#   tests/pg.sh stop [DIR]        stops the one in DIR (default $OFFLOAD_PG_DIR) and deletes it
#   tests/pg.sh pause DIR         stops the server in DIR but keeps its data and port
#   tests/pg.sh resume DIR        starts it again on the same port
#   source tests/pg.sh            defines pg_start and pg_stop for another script
#
# The server is Debian's `postgresql` package (installed with apt-get when no initdb is found),
# in a temporary folder, on a free loopback port, with its socket in that folder, and with
# durable commits (fsync and synchronous_commit on, as in production). initdb refuses to run as
# root, and CI runs as root: the server then runs as the unprivileged user `nobody`, which owns
# the folder. Nothing is skipped: when a server cannot be had, this fails and says why.

# Where PostgreSQL's programs are: Debian keeps them out of PATH, per major version.
pg_bindir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]] && { echo "$dir"; return 0; }
  done
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(readlink -f "$(command -v initdb)")"
    return 0
  fi
  return 1
}

pg_fail() {
  echo "tests/pg.sh: $*" >&2
  return 1
}

# Runs a PostgreSQL program as the server's owner.
pg_as_owner() {
  if [[ $(id -u) == 0 ]]; then
    runuser -u nobody -- "$@"
  else
    "$@"
  fi
}

pg_install() {
  [[ $(id -u) == 0 ]] || pg_fail "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin nor on PATH) and only root can apt-get install it" || return 1
  echo "tests/pg.sh: installing Debian's postgresql package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || pg_fail "apt-get update failed" || return 1
  apt-get install -y -qq --no-install-recommends postgresql >&2 || pg_fail "apt-get install postgresql failed" || return 1
}

# Whether something listens on 127.0.0.1:$1.
pg_port_taken() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pg_free_port() {
  local port tries
  for tries in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    pg_port_taken "$port" || { echo "$port"; return 0; }
  done
  return 1
}

# pg_ctl start on the folder's port, with the settings every start uses.
pg_server_start() {
  local dir=$1 bin port
  bin=$(cat "$dir/bindir") port=$(cat "$dir/port")
  pg_as_owner "$bin/pg_ctl" start --wait --timeout=60 --silent -D "$dir/data" -l "$dir/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 -c fsync=on -c synchronous_commit=on" >&2
}

# Starts a server in a new temporary folder and sets DATABASE_URL and OFFLOAD_PG_DIR.
pg_start() {
  local bin dir port attempt
  bin=$(pg_bindir) || { pg_install && bin=$(pg_bindir); } || pg_fail "no initdb and pg_ctl after installing postgresql" || return 1
  dir=$(mktemp -d "${TMPDIR:-/tmp}/offload-pg.XXXXXX") || return 1
  chmod 0755 "$dir"
  if [[ $(id -u) == 0 ]]; then
    command -v runuser >/dev/null || pg_fail "running as root without runuser, and initdb refuses root" || return 1
    chown nobody "$dir" || return 1
  fi
  echo "$bin" >"$dir/bindir"
  if ! pg_as_owner "$bin/initdb" --pgdata="$dir/data" --username=offload --auth=trust \
    --encoding=UTF8 --locale=C.UTF-8 --no-instructions >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    rm -rf "$dir"
    pg_fail "initdb failed (above)"
    return 1
  fi
  # A free port now may be taken by the time the server binds it: try a few.
  for attempt in 1 2 3 4 5; do
    port=$(pg_free_port) || { rm -rf "$dir"; pg_fail "no free loopback port found"; return 1; }
    echo "$port" >"$dir/port"
    pg_server_start "$dir" && break
    port=
  done
  if [[ -z $port ]]; then
    tail -n 30 "$dir/server.log" >&2 2>/dev/null
    rm -rf "$dir"
    pg_fail "PostgreSQL did not start (its log is above)"
    return 1
  fi
  if ! pg_as_owner "$bin/createdb" -h "$dir" -p "$port" -U offload offload >&2; then
    pg_stop "$dir"
    pg_fail "createdb offload failed"
    return 1
  fi
  export OFFLOAD_PG_DIR=$dir
  export DATABASE_URL="postgres://offload@127.0.0.1:$port/offload"
  echo "tests/pg.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $DATABASE_URL (in $dir)" >&2
}

# Stops the server in $1 (default $OFFLOAD_PG_DIR) and deletes its folder.
pg_stop() {
  local dir=${1:-${OFFLOAD_PG_DIR:-}}
  [[ -n $dir && -f $dir/bindir ]] || return 0
  pg_as_owner "$(cat "$dir/bindir")/pg_ctl" stop --silent -D "$dir/data" -m immediate >/dev/null 2>&1 || true
  rm -rf "$dir"
}

pg_main() {
  set -euo pipefail
  case "${1:-}" in
    run)
      shift
      [[ $# -gt 0 ]] || pg_fail "usage: tests/pg.sh run CMD ARGS..."
      if [[ -z ${DATABASE_URL:-} ]]; then
        pg_start
        PG_SH_OWN_DIR=$OFFLOAD_PG_DIR
        trap 'pg_stop "$PG_SH_OWN_DIR"' EXIT
      fi
      local status=0
      "$@" || status=$?
      return "$status"
      ;;
    start)
      pg_start
      printf 'export DATABASE_URL=%q OFFLOAD_PG_DIR=%q\n' "$DATABASE_URL" "$OFFLOAD_PG_DIR"
      ;;
    stop) pg_stop "${2:-}" ;;
    pause)
      [[ -f ${2:-}/bindir ]] || pg_fail "usage: tests/pg.sh pause DIR"
      pg_as_owner "$(cat "$2/bindir")/pg_ctl" stop --wait --silent -D "$2/data" -m fast >&2
      ;;
    resume)
      [[ -f ${2:-}/bindir ]] || pg_fail "usage: tests/pg.sh resume DIR"
      pg_server_start "$2" || { tail -n 30 "$2/server.log" >&2; pg_fail "PostgreSQL did not start again (its log is above)"; }
      ;;
    *) pg_fail "usage: tests/pg.sh run CMD... | start | stop [DIR] | pause DIR | resume DIR (or source it)" ;;
  esac
}

# Sourced: only the functions. Run: the command.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  pg_main "$@"
fi
