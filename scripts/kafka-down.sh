#!/usr/bin/env bash
# Stops the broker scripts/kafka-up.sh started (its memory storage goes with it). Safe to run
# again.
set -euo pipefail
cd "$(dirname "$0")/.."

PID_FILE="target/kafka/tansu.pid"
if [[ -f "${PID_FILE}" ]] && kill -0 "$(cat "${PID_FILE}")" 2>/dev/null; then
  pid="$(cat "${PID_FILE}")"
  kill "${pid}"
  for _ in $(seq 1 50); do
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${pid}" 2>/dev/null; then
    kill -9 "${pid}"
  fi
  echo "tansu stopped (pid ${pid})"
else
  echo "tansu not running"
fi
rm -f "${PID_FILE}"
