#!/usr/bin/env bash
# A local MQTT broker for development and tests: Debian's Mosquitto.
#
#   scripts/mqtt-up.sh --install   install mosquitto and its clients (mosquitto_pub/_sub), and
#                                  openssl (the mqtts:// tests make their certificates with it),
#                                  if missing, then exit (the tests start their own brokers)
#   scripts/mqtt-up.sh             install if needed, start mosquitto on
#                                  127.0.0.1:${MQTT_PORT:-1883} with a persistent store
#   scripts/mqtt-up.sh --stop      stop the broker this script started
#
# Safe to run again: a running broker is left as it is. Config, pid, log and store live under
# target/mqtt/.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${MQTT_PORT:-1883}"
DIR="target/mqtt"
PID_FILE="${DIR}/mosquitto.pid"

install_packages() {
  local missing=()
  command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || missing+=(mosquitto)
  command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null 2>&1 || {
    echo "mosquitto is missing and there is no apt-get: install ${missing[*]} yourself" >&2
    exit 1
  }
  echo "installing system packages: ${missing[*]}"
  local sudo=""
  [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
  ${sudo} apt-get update -qq
  # The package's own service is not wanted here (the tests start brokers on their own ports).
  DEBIAN_FRONTEND=noninteractive ${sudo} apt-get install -y --no-install-recommends "${missing[@]}"
}

running() {
  [[ -f "${PID_FILE}" ]] && kill -0 "$(cat "${PID_FILE}")" 2>/dev/null
}

install_packages
case "${1:-}" in
  --install) exit 0 ;;
  --stop)
    if running; then kill "$(cat "${PID_FILE}")" && echo "mosquitto stopped"; fi
    rm -f "${PID_FILE}"
    exit 0
    ;;
esac

if running; then
  echo "mosquitto already running (pid $(cat "${PID_FILE}")) on 127.0.0.1:${PORT}"
  exit 0
fi
mkdir -p "${DIR}/store"
ROOT="$(pwd)"
{
  echo "listener ${PORT} 127.0.0.1"
  echo "allow_anonymous true"
  echo "persistence true"
  echo "persistence_location ${ROOT}/${DIR}/store/"
  # Room for a load test: the broker's defaults (20 in flight, 1000 queued per client) throttle.
  echo "max_inflight_messages 1000"
  echo "max_queued_messages 100000"
  echo "pid_file ${ROOT}/${PID_FILE}"
  echo "log_dest file ${ROOT}/${DIR}/mosquitto.log"
  # As root, mosquitto would switch to its own user, who cannot write here.
  [[ "$(id -u)" -eq 0 ]] && echo "user root"
} > "${DIR}/mosquitto.conf"
MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
"${MOSQUITTO}" -c "${DIR}/mosquitto.conf" -d
for _ in $(seq 50); do
  if running; then
    echo "mosquitto running (pid $(cat "${PID_FILE}")) on mqtt://127.0.0.1:${PORT}"
    exit 0
  fi
  sleep 0.1
done
echo "mosquitto did not start; see ${DIR}/mosquitto.log" >&2
exit 1
