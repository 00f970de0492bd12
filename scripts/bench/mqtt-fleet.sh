#!/usr/bin/env bash
# DEVICES simulated devices, each over its own MQTT connection, against a private Mosquitto
# (docs/benchmarks.md): `iiot simulate --output mqtt --mqtt-connections-per-device` for DURATION
# s at INTERVAL, with `iiot run --devices 0 --mqtt-url …` counting what arrives. Prints the
# broker's connected clients ($SYS) and the simulator's and broker's memory at the end of the
# run, what the simulator sent and what the processors took. Raises the open-files limit to
# DEVICES + 1000 for the broker and the simulator (needs a hard limit that high). Needs a
# release build (BIN) and mosquitto. Ports come from the OS.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$(pwd)/target/release/iiot}
DEVICES=${DEVICES:-10000}; INTERVAL=${INTERVAL:-5s}; DURATION=${DURATION:-40}
ulimit -n $((DEVICES + 1000))
D=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MP=$(port); HP=$(port)
cat > $D/m.conf <<CONF
listener $MP 127.0.0.1
allow_anonymous true
max_inflight_messages 1000
max_queued_messages 1000000
sys_interval 2
CONF
[[ "$(id -u)" -eq 0 ]] && echo "user root" >> $D/m.conf
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
"$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c $D/m.conf > $D/mosq.log 2>&1 & MPID=$!; PIDS+=($MPID)
(cd $D && exec env SIMULATOR=off HTTP_PORT=$HP WEBSOCKET_PORT=0 STATUS_INTERVAL=0 MQTT_CLIENT_ID=bench-fleet-run \
  $BIN run --mqtt-url mqtt://127.0.0.1:$MP < /dev/null > $D/run.log 2>&1) & RPID=$!; PIDS+=($RPID)
until curl -sf localhost:$HP/ready >/dev/null; do sleep 0.2; done
$BIN simulate --output mqtt --mqtt-url mqtt://127.0.0.1:$MP --mqtt-connections-per-device \
  --devices $DEVICES --interval $INTERVAL --duration ${DURATION}s --seed 1 < /dev/null > $D/sim.log 2>&1 & SPID=$!
PIDS+=($SPID)
sleep $((DURATION - 5))
connected=$(mosquitto_sub -p $MP -C 1 -t '$SYS/broker/clients/connected')
rss() { awk '/VmRSS/{print $2/1024 " MiB"}' /proc/$1/status; }
echo "broker clients connected: $connected (incl. the monitor)"
echo "simulator RSS: $(rss $SPID), mosquitto RSS: $(rss $MPID), simulator fds: $(ls /proc/$SPID/fd | wc -l)"
wait $SPID || true
sent=$(grep -o 'sent=[0-9]*' $D/sim.log | tail -1 | cut -d= -f2)
grep -o 'errors=[0-9]*' $D/sim.log | tail -1
grep -o 'connections=[0-9]*' $D/sim.log | tail -1
m() { curl -s localhost:$HP/metrics | awk '/^iot_messages_total\{status="success"\}/{print $2}'; }
for _ in $(seq 30); do [[ "$(m)" -ge "$sent" ]] && break; sleep 1; done
echo "sent=$sent processed=$(m)"
