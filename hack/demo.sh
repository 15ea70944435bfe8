#!/usr/bin/env bash
# The whole product on one machine, as a cluster runs it: the test API server (HTTPS, RBAC)
# with its workload controllers and a kubelet that runs pods as local processes; the
# operator installed by `helm install` of charts/biometrics, so it runs as the chart's
# Deployment under its ServiceAccount and Roles; then the examples, applied with kubectl as
# in a cluster, so the shop's Deployments run their Go apps, agents (the chart's sidecar
# template, rendered into examples/app.yaml), Redis and load generator as pods. Runs until
# Ctrl-C (or, with --check, stops once the results are in, a rollout's invalidation
# included) and removes everything it started. Needs root, as the kubelet makes namespaces.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PATH="$root/.tools/bin:$PATH"
check=false
[[ "${1:-}" == "--check" ]] && check=true

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() {
  printf 'demo: %s\n' "$*" >&2
  if [[ -n "${work:-}" && -f "${KUBECONFIG:-}" ]]; then
    # What a user would look at next: the objects' status and the end of every log.
    kubectl get pods,pcap,cpol -A -o wide >&2 || true
    kubectl describe pcap,cpol -n shop 2>/dev/null | tail -40 >&2 || true
    printf '\n--- the operator\n' >&2
    kubectl logs -n biometrics-system deployment/biometrics --tail=15 >&2 || true
    for log in "$work"/*.log; do printf '\n--- %s\n' "$log" >&2; tail -15 "$log" >&2; done
  fi
  exit 1
}

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

[[ "$(id -u)" == 0 ]] || fail "the local cluster's kubelet runs pods in namespaces of their own: run it as root (sudo make demo)"

say "building the operator, the agent, the test API server and the Go programs"
cargo build --quiet --locked --workspace --bins
bin="$root/target/debug"
mkdir -p target/go
(cd tests/target && GOFLAGS=-mod=mod GOCACHE="$root/target/go/cache" go build -o "$root/target/go/pprof-target" .)
(cd tests/loadgen && GOFLAGS=-mod=mod GOCACHE="$root/target/go/cache" go build -o "$root/target/go/loadgen" .)

say "starting the test API server, its workload controllers and its kubelet"
# The kubelet runs each pod's containers as local processes, mapping images to the
# binaries just built (and redis-server); pods get their own network and mount namespaces.
cat >"$work/images.yaml" <<EOF
images:
  registry.example.com/users: {command: [$root/target/go/pprof-target], args: [-addr, "0.0.0.0:6060"]}
  registry.example.com/checkout: {command: [$root/target/go/pprof-target], args: [-addr, "0.0.0.0:6060"]}
  registry.example.com/loadgen: {command: [$root/target/go/loadgen]}
  ghcr.io/biometrics-io/biometrics-agent: {command: [$bin/biometrics-agent]}
  # The operator's image ships speedscope for the browser's flame graphs; here it is on the node.
  ghcr.io/biometrics-io/biometrics-operator:
    command: [$bin/biometrics-operator]
    env: {BIOMETRICS_UI_SPEEDSCOPE_DIR: $root/.tools/speedscope}
  redis: {command: [$(command -v redis-server)]}
EOF
export KUBECONFIG="$work/kubeconfig"
export KUBECACHEDIR="$work/kubecache"
export HELM_CACHE_HOME="$work/helm" HELM_CONFIG_HOME="$work/helm" HELM_DATA_HOME="$work/helm"
# RBAC (and so HTTPS): the kubeconfig is an admin's, the operator's pods have their token.
start apiserver "$bin/test-apiserver" --listen 127.0.0.1:0 --kubeconfig "$KUBECONFIG" \
  --authorization-mode RBAC --kubelet-images "$work/images.yaml" --kubelet-state "$work/kubelet"
wait_for "the API server" 20 kubectl get --raw /version
kubectl create namespace shop >/dev/null

say "helm install biometrics charts/biometrics -n biometrics-system --create-namespace"
helm install biometrics charts/biometrics -n biometrics-system --create-namespace >/dev/null
# The replica that takes the Lease makes its signing key at once; both replicas turn Ready
# at their next readiness probe (kubectl get deployment -n biometrics-system shows it).
wait_for "the operator's signing key" 60 kubectl get secret -n biometrics-system biometrics-operator-signing-key
# The capture browser listens on the operator pods' loopback (ui.auth=port-forward).
ui_port="$(free_port)"
start port-forward kubectl port-forward -n biometrics-system deployment/biometrics "$ui_port:9478"
wait_for "the port-forward to the capture browser" 30 curl -sf "http://127.0.0.1:$ui_port/api/v1/captures"

say "kubectl apply -f examples/app.yaml: Redis, the users and checkout apps with their agents, a load generator"
kubectl apply -f examples/app.yaml
for deployment in redis users checkout load; do
  kubectl rollout status "deployment/$deployment" -n shop --timeout=120s
done
kubectl get pods -n shop -o wide
redis_ip="$(kubectl get pod -n shop -l app=redis -o jsonpath='{.items[0].status.podIP}')"
say "caching some keys in Redis ($redis_ip:6379)"
{
  for i in $(seq 1 50); do echo "SET users:profile:$i p"; echo "SET users:session:$i s"; done
  echo "SET users:user:1 a"; echo "SET users:user:2 b"; echo "SET users:user:3 c"
  echo "SADD users:tag:active users:session:1 users:session:2"
} | redis-cli -h "$redis_ip" -a change-me --no-auth-warning >/dev/null

say "kubectl apply -f examples/capture-oneshot.yaml -f examples/capture-latency.yaml -f examples/capture-rollout.yaml -f examples/cachepolicy-users.yaml"
kubectl apply -f examples/capture-oneshot.yaml -f examples/capture-latency.yaml -f examples/capture-rollout.yaml -f examples/cachepolicy-users.yaml

say "waiting for the first capture (10 s of CPU) and the first invalidations"
wait_for "the capture" 120 bash -c '[[ "$(kubectl get pcap checkout-now -n shop -o jsonpath="{.status.phase}")" == Succeeded ]]'
wait_for "the invalidations" 60 bash -c \
  'kubectl get cpol users -n shop -o jsonpath="{.status.invalidations[*].result}" | grep -q Succeeded'

say "kubectl rollout restart deployment/users -n shop: its profiles-after-rollout rule runs once the rollout completes"
kubectl rollout restart deployment/users -n shop
kubectl rollout status deployment/users -n shop --timeout=120s
rollout_rule='{.status.invalidations[?(@.name=="profiles-after-rollout")]}'
wait_for "the rollout's invalidation" 60 bash -c \
  "kubectl get cpol users -n shop -o jsonpath='$rollout_rule' | jq -e '.trigger == \"Rollout\" and .result == \"Succeeded\"'"
say "kubectl logs deployment/load -n shop: the load generator's traffic to checkout"
wait_for "the load generator's first report" 30 bash -c "kubectl logs deployment/load -n shop | grep -Eq ' [1-9][0-9]* ok, '"
kubectl logs deployment/load -n shop --tail=2

say "kubectl get pcap,cpol -n shop"
kubectl get pcap,cpol -n shop
say "kubectl describe pcap checkout-now -n shop"
kubectl describe pcap checkout-now -n shop
say "kubectl describe cpol users -n shop"
kubectl describe cpol users -n shop
say "the capture browser at http://127.0.0.1:$ui_port/"
curl -sf "http://127.0.0.1:$ui_port/api/v1/captures" | jq -r '.[] | "\(.namespace)/\(.name)  \(.phase)  last run \(.lastRun)"'
say "kubectl biometrics runs pcap/checkout-now -n shop (through its own port-forward to the operator)"
kubectl biometrics runs pcap/checkout-now -n shop

slow_ip="$(kubectl get pod -n shop -l app=checkout -o jsonpath='{.items[0].status.podIP}')"
if $check; then
  say "demo check passed"
  exit 0
fi
cat <<EOF

Everything is running. In another terminal:

  export KUBECONFIG=$KUBECONFIG PATH=$root/.tools/bin:\$PATH
  kubectl get pcap,cpol -n shop
  # the operator: the chart's Deployment, two replicas, one holding the Lease
  kubectl get deployment,pods,lease -n biometrics-system
  helm status biometrics -n biometrics-system
  # the capture browser (forwarded to the operator's pod): every capture, run, pod and
  # profile, flame graphs included: browse http://127.0.0.1:$ui_port/
  kubectl biometrics runs pcap/checkout-now -n shop
  kubectl biometrics fetch pcap/checkout-now -n shop -o ./profiles
  kubectl biometrics capture pcap/checkout-now -n shop --wait
  kubectl annotate pcap checkout-now -n shop biometrics.io/capture-now=\$(date +%s) --overwrite
  kubectl annotate cpol users -n shop biometrics.io/invalidate-now=\$(date +%s) --overwrite
  # a rollout: the CachePolicy's profiles-after-rollout rule runs once it completes
  kubectl rollout restart deployment/users -n shop && kubectl rollout status deployment/users -n shop
  kubectl describe cpol users -n shop
  # the pods are processes: scale, read logs, delete one (its ReplicaSet replaces it)
  kubectl scale deployment/checkout -n shop --replicas=3
  kubectl logs deployment/checkout -n shop -c biometrics-agent
  kubectl delete pod -n shop -l app=checkout --wait=false
  # make one checkout pod answer 800 ms slower: its p99 passes 500 ms, the LATENCY column
  # rises and a triggered run of checkout-latency captures that pod (within a minute or so)
  curl "http://$slow_ip:6060/control?delay_ms=800"
  kubectl get pcap checkout-latency -n shop -w
  # a slower release of checkout (extra CPU in main.extraHashRounds): once it has rolled
  # out and settled 30 s, the ROLLOUT column and describe give the verdict and the function
  kubectl set env deployment/checkout -n shop EXTRA_HASH_ROUNDS=300
  kubectl rollout status deployment/checkout -n shop && kubectl get pcap checkout-rollouts -n shop -w
  kubectl describe pcap checkout-rollouts -n shop
  go tool pprof -top $work/kubelet/claims/shop/biometrics-profiles/shop/checkout-now/*/*/cpu.pb.gz

Operator metrics: http://$(kubectl get pod -n biometrics-system -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].status.podIP}'):8080/metrics
Logs: kubectl logs -n biometrics-system deployment/biometrics, and $work/*.log
Press Ctrl-C to stop and clean up.
EOF
while true; do sleep 3600; done
