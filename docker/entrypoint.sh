#!/bin/sh
# The image's entrypoint.
#   api     (default) apply migrations (quorum db upgrade), then serve the API and the
#           web UI with uvicorn, $QUORUM_WEB_WORKERS worker processes (default 4).
#           QUORUM_MIGRATE_ON_START=0 skips the migration (compose runs it once, in
#           the "migrate" service, before any API container starts).
#   worker  a job worker (quorum worker: procrastinate on PostgreSQL) working the queues
#           in $QUORUM_WORKER_QUEUES (comma-separated; default all: embed, periodic,
#           crowd, deliver); more arguments go to quorum worker. Scale with
#           docker compose up --scale worker=N.
#   *       anything else runs as given: quorum db upgrade, quorum users add ..., sh
set -eu

case "${1:-api}" in
  api)
    if [ "${QUORUM_MIGRATE_ON_START:-1}" != "0" ]; then
      quorum db upgrade
    fi
    exec uvicorn backend.asgi:app \
      --host 0.0.0.0 --port 8000 \
      --workers "${QUORUM_WEB_WORKERS:-4}" \
      --proxy-headers --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}"
    ;;
  worker)
    shift
    if [ -n "${QUORUM_WORKER_QUEUES:-}" ]; then
      exec quorum worker --queues "${QUORUM_WORKER_QUEUES}" "$@"
    fi
    exec quorum worker "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
