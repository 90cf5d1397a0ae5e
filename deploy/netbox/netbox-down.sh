#!/usr/bin/env bash
# Stop what netbox-up.sh started, by PID (runserver, Redis, PostgreSQL). Idempotent.
# The PostgreSQL data dir and the caches stay: the next netbox-up.sh reuses them.
set -uo pipefail

CACHE=${CROSSVISOR_CACHE:-$HOME/.cache/crossvisor}/netbox
PG_PORT=${CROSSVISOR_NETBOX_PG_PORT:-55432}
HTTP_PORT=${CROSSVISOR_NETBOX_PORT:-58001}
# Same run dir rule as netbox-up.sh.
if [[ $HTTP_PORT == 58001 ]]; then RUN_DEFAULT=$CACHE/run; else RUN_DEFAULT=$CACHE/run-$HTTP_PORT; fi
RUN=${CROSSVISOR_NETBOX_RUN:-$RUN_DEFAULT}
PGBIN=${PGBIN:-$(pg_config --bindir)}
if [[ $(id -u) == 0 ]]; then
  PGHOME=${CROSSVISOR_NETBOX_PGHOME:-/var/tmp/crossvisor-netbox-pg-$PG_PORT}
else
  PGHOME=${CROSSVISOR_NETBOX_PGHOME:-$RUN/pg}
fi

stop_pid() { # pidfile
  [[ -s $1 ]] || return 0
  local pid
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$1"
}

stop_pid "$RUN/netbox.pid"
stop_pid "$RUN/redis.pid"
if [[ -f $PGHOME/data/postmaster.pid ]]; then
  # pg_ctl stops exactly the postmaster of this data dir (PID from postmaster.pid).
  if [[ $(id -u) == 0 ]]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGHOME/data" -m fast -w stop >/dev/null 2>&1
  else
    "$PGBIN/pg_ctl" -D "$PGHOME/data" -m fast -w stop >/dev/null 2>&1
  fi
fi
# The PID file may outlive a crashed postmaster; stop_pid is a no-op then.
stop_pid "$RUN/postgres.pid"
rm -f "$RUN/netbox.env"
echo "netbox-down: stopped" >&2
