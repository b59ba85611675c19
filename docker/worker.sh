#!/bin/sh
# The batch worker: runs each command of QUORUM_WORKER_COMMANDS, in order, every
# QUORUM_WORKER_INTERVAL seconds (default 60). Commands are `quorum` subcommands
# with their arguments, separated by ';', e.g.
#   QUORUM_WORKER_COMMANDS="expire-leases; embed; crowd sync"
# A failing command is logged and the loop goes on (the next pass retries it).
# Before and after each pass the worker touches $QUORUM_WORKER_HEARTBEAT, which the
# compose healthcheck reads. QUORUM_WORKER_ONCE=1 runs one pass and exits with the number of
# failed commands (0 = all succeeded).
set -u

commands="${QUORUM_WORKER_COMMANDS:-expire-leases}"
interval="${QUORUM_WORKER_INTERVAL:-60}"
heartbeat="${QUORUM_WORKER_HEARTBEAT:-/tmp/quorum-worker.heartbeat}"

trap 'echo "worker: stopping"; exit 0' INT TERM

run_pass() {
  failed=0
  touch "$heartbeat" 2>/dev/null || true
  set -f                      # no globbing: '*' in an argument stays '*'
  old_ifs=$IFS
  IFS=';'
  for cmd in $commands; do
    IFS=$old_ifs
    # shellcheck disable=SC2086  # split the command into its words on purpose
    set -- $cmd
    [ "$#" -eq 0 ] && continue
    echo "worker: quorum $*"
    quorum "$@" || { echo "worker: 'quorum $*' failed (exit $?)" >&2; failed=$((failed + 1)); }
  done
  IFS=$old_ifs
  set +f
  touch "$heartbeat" 2>/dev/null || true
  return "$failed"
}

if [ "${QUORUM_WORKER_ONCE:-0}" = "1" ]; then
  run_pass
  exit $?
fi

echo "worker: every ${interval}s: ${commands}"
while :; do
  run_pass || true
  sleep "$interval" &
  wait $!
done
