#!/usr/bin/env bash
# The whole product on one machine: the test API server, a Redis, two Go apps each with its
# agent on its own loopback address, and the operator; then the examples, applied with
# kubectl. Runs until Ctrl-C (or, with --check, stops once the results are in) and removes
# everything it started.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PATH="$root/.tools/bin:$PATH"
check=false
[[ "${1:-}" == "--check" ]] && check=true

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf 'demo: %s\n' "$*" >&2; exit 1; }

work="$(mktemp -d -t biometrics-demo.XXXXXX)"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  echo "demo: stopped everything and removed $work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME COMMAND...: runs a process in the background, its output in $work/NAME.log.
start() {
  local name="$1"; shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=("$!")
}

# wait_for DESCRIPTION SECONDS COMMAND...: retries COMMAND every half second.
wait_for() {
  local what="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out waiting for $what (logs in $work)"
    sleep 0.5
  done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

say "building the operator, the agent and the test API server"
cargo build --quiet --locked --workspace --bins
bin="$root/target/debug"
mkdir -p target/go
(cd tests/target && GOFLAGS=-mod=mod GOCACHE="$root/target/go/cache" go build -o "$root/target/go/pprof-target" .)

say "starting the test API server"
export KUBECONFIG="$work/kubeconfig"
export KUBECACHEDIR="$work/kubecache"
# (--controllers=false: the demo still creates its Pods by script.)
start apiserver "$bin/test-apiserver" --listen 127.0.0.1:0 --kubeconfig "$KUBECONFIG" --controllers=false \
  --create crds/yaml/profilecapture.yaml --create crds/yaml/cachepolicy.yaml
wait_for "the API server" 20 kubectl get --raw /version
# (apply, not create: kubectl creates built-ins with protobuf bodies, which the test API
# server does not read — see tests/apiserver/README.md)
printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n---\n' shop biometrics-system | kubectl apply -f - >/dev/null

say "starting Redis (password from examples/app.yaml) with some cached keys"
redis_port="$(free_port)"
start redis redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --requirepass change-me
wait_for "Redis" 10 redis-cli -p "$redis_port" -a change-me --no-auth-warning ping
{
  for i in $(seq 1 50); do echo "SET users:profile:$i p"; echo "SET users:session:$i s"; done
  echo "SET users:user:1 a"; echo "SET users:user:2 b"; echo "SET users:user:3 c"
  echo "SADD users:tag:active users:session:1 users:session:2"
} | redis-cli -p "$redis_port" -a change-me --no-auth-warning >/dev/null

say "starting the operator"
metrics_port="$(free_port)"
ui_port="$(free_port)"
start operator env BIOMETRICS_LOG=info "$bin/biometrics-operator" --metrics-addr "127.0.0.1:$metrics_port" \
  --namespace biometrics-system --identity demo-operator \
  --ui-addr "127.0.0.1:$ui_port" --ui-speedscope-dir "$root/.tools/speedscope"
wait_for "the operator's signing key" 30 kubectl get secret -n biometrics-system biometrics-operator-signing-key
kubectl get secret -n biometrics-system biometrics-operator-signing-key -o jsonpath='{.data.operator\.pub}' \
  | base64 -d >"$work/operator.pub"

# pod NAME APP IP: a Go app on IP:6060, its agent on IP:9477, and the Pod object saying so.
pod() {
  local name="$1" app="$2" ip="$3"
  start "$name-app" "$root/target/go/pprof-target" -addr "$ip:6060"
  start "$name-agent" env BIOMETRICS_LOG=info "$bin/biometrics-agent" --listen "$ip:9477" \
    --pod-name "$name" --pod-namespace shop --target-host "$ip" --target-port 6060 \
    --memory-limit-bytes 536870912 --profiles-dir "$work/profiles" --operator-public-key "$work/operator.pub"
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
  namespace: shop
  labels: {app: $app, biometrics.io/agent: "true"}
  annotations: {biometrics.io/agent-port: "9477"}
spec:
  containers:
    - {name: app, image: demo/$app}
    - {name: biometrics-agent, image: demo/biometrics-agent}
EOF
  kubectl patch pod "$name" -n shop --subresource=status --type=merge \
    -p "{\"status\":{\"phase\":\"Running\",\"podIP\":\"$ip\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}" >/dev/null
}
say "starting two demo apps, each with its agent on its own loopback address"
pod checkout-0 checkout 127.0.0.2
pod users-0 users 127.0.0.3
wait_for "the agents" 20 curl -sf http://127.0.0.2:9477/healthz
wait_for "the agents" 20 curl -sf http://127.0.0.3:9477/healthz
# Steady traffic: the demo app sends itself 10 requests a second on /work, so its
# /metrics has a latency histogram and a request counter that move.
curl -sf "http://127.0.0.2:6060/control?rps=10" >/dev/null

say "applying examples/app.yaml, capture-oneshot.yaml and cachepolicy-users.yaml (Redis at 127.0.0.1:$redis_port)"
kubectl apply -f examples/app.yaml
# No Deployment controller runs here: report the users Deployment as rolled out.
kubectl patch deployment users -n shop --subresource=status --type=merge \
  -p '{"status":{"observedGeneration":1,"replicas":2,"updatedReplicas":2,"readyReplicas":2,"availableReplicas":2}}' >/dev/null
kubectl apply -f examples/capture-oneshot.yaml
kubectl apply -f examples/capture-latency.yaml
sed "s/redis.shop.svc:6379/127.0.0.1:$redis_port/" examples/cachepolicy-users.yaml | kubectl apply -f -

say "waiting for the first capture (10 s of CPU) and the first invalidations"
wait_for "the capture" 120 bash -c '[[ "$(kubectl get pcap checkout-now -n shop -o jsonpath="{.status.phase}")" == Succeeded ]]'
wait_for "the invalidations" 60 bash -c \
  'kubectl get cpol users -n shop -o jsonpath="{.status.invalidations[*].result}" | grep -q Succeeded'

say "kubectl get pcap,cpol -n shop"
kubectl get pcap,cpol -n shop
say "kubectl describe pcap checkout-now -n shop"
kubectl describe pcap checkout-now -n shop
say "kubectl describe cpol users -n shop"
kubectl describe cpol users -n shop
say "the capture browser at http://127.0.0.1:$ui_port/"
curl -sf "http://127.0.0.1:$ui_port/api/v1/captures" | jq -r '.[] | "\(.namespace)/\(.name)  \(.phase)  last run \(.lastRun)"'
say "kubectl biometrics runs pcap/checkout-now -n shop"
kubectl biometrics runs pcap/checkout-now -n shop --ui "http://127.0.0.1:$ui_port"

if $check; then
  say "demo check passed"
  exit 0
fi
cat <<EOF

Everything is running. In another terminal:

  export KUBECONFIG=$KUBECONFIG PATH=$root/.tools/bin:\$PATH
  kubectl get pcap,cpol -n shop
  # the capture browser: every capture, run, pod and profile, flame graphs included
  # browse http://127.0.0.1:$ui_port/
  kubectl biometrics runs pcap/checkout-now -n shop --ui http://127.0.0.1:$ui_port
  kubectl biometrics fetch pcap/checkout-now -n shop -o ./profiles --ui http://127.0.0.1:$ui_port
  kubectl biometrics capture pcap/checkout-now -n shop --wait --ui http://127.0.0.1:$ui_port
  kubectl annotate pcap checkout-now -n shop biometrics.io/capture-now=\$(date +%s) --overwrite
  kubectl annotate cpol users -n shop biometrics.io/invalidate-now=\$(date +%s) --overwrite
  # make checkout-0 answer 800 ms slower: its p99 passes 500 ms, the LATENCY column rises
  # and a triggered run of checkout-latency captures that pod (within a minute or so)
  curl "http://127.0.0.2:6060/control?delay_ms=800"
  kubectl get pcap checkout-latency -n shop -w
  go tool pprof -top $work/profiles/shop/checkout-now/*/checkout-0/cpu.pb.gz

Operator metrics: http://127.0.0.1:$metrics_port/metrics   Logs: $work/*.log
Press Ctrl-C to stop and clean up.
EOF
while true; do sleep 3600; done
