#!/usr/bin/env bash
# MQTT → processor throughput, one run (docs/benchmarks.md): a private Mosquitto, `iiot run
# --devices 0 --mqtt-url`, and `iiot simulate --output mqtt` publishing DEVICES devices every
# INTERVAL for 25 s. Prints the simulator's count and the rate of iot_messages_total{success} on
# the iiot run side over the 10 s window from 8 s to 18 s. Ports MP (broker) and HP (HTTP) must
# be free. Needs a release build (BIN, default target/release/iiot) and mosquitto.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$(pwd)/target/release/iiot}
D=$(mktemp -d); MP=${MP:-24883}; HP=${HP:-24880}
DEVICES=${DEVICES:-10000}; INTERVAL=${INTERVAL:-50ms}
cat > $D/m.conf <<CONF
listener $MP 127.0.0.1
allow_anonymous true
max_inflight_messages 1000
max_queued_messages 1000000
CONF
[[ "$(id -u)" -eq 0 ]] && echo "user root" >> $D/m.conf
"$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c $D/m.conf > $D/mosq.log 2>&1 & MPID=$!
sleep 0.5
cd $D
SIMULATOR=off HTTP_PORT=$HP WEBSOCKET_PORT=0 STATUS_INTERVAL=0 MQTT_CLIENT_ID=bench-run $BIN run --mqtt-url mqtt://127.0.0.1:$MP < /dev/null > $D/run.log 2>&1 & RPID=$!
until curl -sf localhost:$HP/ready >/dev/null; do sleep 0.2; done
$BIN simulate --output mqtt --mqtt-url mqtt://127.0.0.1:$MP --devices $DEVICES --interval $INTERVAL --duration 25s --seed 1 < /dev/null > $D/sim.log 2>&1 & SPID=$!
m() { curl -s localhost:$HP/metrics | awk '/^iot_messages_total\{status="success"\}/{print $2}'; }
sleep 8; a=$(m); t0=$(date +%s.%N); sleep 10; b=$(m); t1=$(date +%s.%N)
curl -s localhost:$HP/metrics | grep -E "^iot_mqtt"
rate=$(python3 -c "print(round(($b-$a)/($t1-$t0)))")
wait $SPID || true
# Only the processes started here are stopped, by pid.
kill $RPID; wait $RPID || true; kill $MPID; wait $MPID 2>/dev/null || true
grep -o 'sent=[0-9]*' $D/sim.log | tail -1
echo "rate=$rate"
rm -rf "$D"
