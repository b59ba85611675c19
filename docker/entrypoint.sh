#!/bin/sh
# The image's entrypoint.
#   api     (default) apply migrations (quorum db upgrade), then serve the API and the
#           web UI with uvicorn, $QUORUM_WEB_WORKERS worker processes (default 4).
#           QUORUM_MIGRATE_ON_START=0 skips the migration (compose runs it once, in
#           the "migrate" service, before any API container starts).
#   worker  the batch loop (docker/worker.sh): $QUORUM_WORKER_COMMANDS every
#           $QUORUM_WORKER_INTERVAL seconds.
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
    exec sh "$(dirname "$0")/worker.sh"
    ;;
  *)
    exec "$@"
    ;;
esac
