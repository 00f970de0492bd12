#!/usr/bin/env bash
# The web dashboard in a real headless Chromium, against a real `iiot run`.
#
#   bash scripts/browser-test.sh           functional tests (tests/browser/run.mjs), debug build
#   bash scripts/browser-test.sh --bench   frame times, long tasks and JS heap with 10,000 devices
#                                          streaming every second (tests/browser/bench.mjs),
#                                          release build; BENCH_SECONDS (30), BENCH_DEVICES (10000)
#
# Installs what a fresh machine lacks (Debian's chromium, the pinned playwright-core from
# tests/browser/package-lock.json), starts the server on free ports below 32768 with small
# settings, runs the node script, and always stops the server. Screenshots, the server log and
# the benchmark report go to target/browser/. IIOT_BIN=path skips the cargo build; the binary
# is looked for under CARGO_TARGET_DIR when that is set.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

mode=test
case "${1:-}" in
  "") ;;
  --bench) mode=bench ;;
  *) echo "usage: $0 [--bench]" >&2; exit 2 ;;
esac

echo "== browser: chromium"
if [[ ! -x /usr/bin/chromium ]]; then
  echo "chromium not found: installing it from Debian packages (one-off)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null
# Building names in the data are Chinese (A栋); without a CJK font screenshots show boxes.
if command -v fc-list >/dev/null && [[ -z "$(fc-list :lang=zh 2>/dev/null | head -1)" ]]; then
  echo "no CJK font: installing fonts-wqy-microhei (one-off, for readable screenshots)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq fonts-wqy-microhei >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq fonts-wqy-microhei >/dev/null; } ||
    echo "could not install a CJK font; continuing (only screenshots suffer)"
fi

echo "== browser: playwright-core"
wanted=$(node -p "require('./tests/browser/package.json').devDependencies['playwright-core']")
have=$(node -p "try { require('./tests/browser/node_modules/playwright-core/package.json').version } catch { '' }")
if [[ "$have" != "$wanted" ]]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== browser: iiot binary"
# Where cargo puts it: CARGO_TARGET_DIR when set (relative to the repository root), else target/.
target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$root/$target
if [[ -n "${IIOT_BIN:-}" ]]; then
  bin=$IIOT_BIN
elif [[ $mode == bench ]]; then
  cargo build --locked --release --bin iiot
  bin=$target/release/iiot
else
  cargo build --locked --bin iiot
  bin=$target/debug/iiot
fi

out=$root/target/browser
mkdir -p "$out"

# A port nobody listens on, outside the ephemeral range (32768-60999) other tests draw from.
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}
http_port=$(free_port)
ws_port=$(free_port)
while [[ $ws_port == "$http_port" ]]; do ws_port=$(free_port); done

if [[ $mode == bench ]]; then
  args=(run --devices "${BENCH_DEVICES:-10000}" --interval 1s --seed 1 --fault-rate 0.0005)
  thresholds=()
else
  # Small and fast: 40 devices every 500 ms; a fault rate and a low temperature threshold that
  # make overheating alerts appear within seconds (an overheat ramps ~3 °C per reading).
  args=(run --devices 40 --interval 500ms --seed 7 --fault-rate 0.02)
  thresholds=(ALERT_TEMPERATURE_HIGH=45)
fi

# Run in an empty directory so that a developer's .env or iiot.toml cannot change the test.
workdir=$(mktemp -d)
server_pid=
stop_server() {
  if [[ -n ${auth_pid:-} ]]; then kill -TERM "$auth_pid" 2>/dev/null || true; wait "$auth_pid" 2>/dev/null || true; fi
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

echo "== browser: starting iiot ${args[*]} (HTTP $http_port, WebSocket $ws_port)"
(
  cd "$workdir"
  exec env HTTP_PORT="$http_port" WEBSOCKET_PORT="$ws_port" STATUS_INTERVAL=0 RUST_LOG=warn \
    ${thresholds[@]+"${thresholds[@]}"} "$bin" "${args[@]}"
) >"$out/server-$mode.log" 2>&1 &
server_pid=$!

auth_pid=
if [[ $mode == test ]]; then
  # A second server with users, for the sign-in tests: olga (operator) and vera (viewer).
  auth_http=$(free_port)
  auth_ws=$(free_port)
  authdir=$workdir/auth-data
  printf 'olga operator pw\n' | "$bin" auth --data-dir "$authdir" add-user olga --role operator --password-stdin
  printf 'vera viewer pw\n' | "$bin" auth --data-dir "$authdir" add-user vera --role viewer --password-stdin
  (
    cd "$workdir"
    exec env HTTP_PORT="$auth_http" WEBSOCKET_PORT="$auth_ws" DATA_DIR="$authdir" \
      LISTEN_ADDR=127.0.0.1 STATUS_INTERVAL=0 RUST_LOG=warn ALERT_TEMPERATURE_HIGH=45 \
      "$bin" run --devices 20 --interval 500ms --seed 7 --fault-rate 0.02
  ) >"$out/server-auth.log" 2>&1 &
  auth_pid=$!
fi

base="http://127.0.0.1:$http_port"
for i in $(seq 1 100); do
  if curl -fsS "$base/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "iiot exited before serving; its log:" >&2
    cat "$out/server-$mode.log" >&2
    exit 1
  fi
  if [[ $i == 100 ]]; then echo "iiot did not answer /health in 20 s" >&2; exit 1; fi
  sleep 0.2
done

if [[ $mode == bench ]]; then
  node tests/browser/bench.mjs --base "$base" --out "$out" --seconds "${BENCH_SECONDS:-30}" \
    --command "scripts/browser-test.sh --bench (iiot ${args[*]}, release)"
else
  for i in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$auth_http/health" >/dev/null 2>&1; then break; fi
    if [[ $i == 100 ]]; then echo "the server with users did not answer:" >&2; cat "$out/server-auth.log" >&2; exit 1; fi
    sleep 0.2
  done
  node tests/browser/run.mjs --base "$base" --auth-base "http://127.0.0.1:$auth_http" --out "$out"
fi
