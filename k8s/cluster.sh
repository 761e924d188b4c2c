#!/usr/bin/env bash
# A Kubernetes v1.34 cluster on this machine for the cluster tests and `make k8s-demo`: a real node that
# runs everything, a second real node (its own containerd, kubelet and pod bridge) tainted so that only
# pods that tolerate it land there (the drain test's generator), and one KWOK fake GPU node. Needs root
# and Debian's etcd-server, containerd, runc, containernetworking-plugins, iptables, conntrack, podman,
# openssl; the Kubernetes binaries come from k8s/build-tools.sh (.cache/k8s/bin).
#   k8s/cluster.sh up       start whatever is not running, wait until the three nodes are Ready (idempotent)
#   k8s/cluster.sh down     stop every daemon by PID, remove the bridges, iptables rules and sysctl
#                           changes this script made (idempotent); images stay in containerd's store
#   k8s/cluster.sh status   the daemons and their PIDs
#   k8s/cluster.sh kubectl ARGS... / ctr ARGS...    the cluster's kubectl / the first node's containerd client
#   k8s/cluster.sh ctr-on NODE ARGS...              the containerd client of either real node
#   k8s/cluster.sh share-images   the second node's image store made a hard-linked copy of the first's
#                                 (only while no node runs a container; k8s/images.sh load uses it)
#   k8s/cluster.sh env      `export KUBECONFIG=...` for a shell
# Every file lives under .cache/k8s/run (git-ignored). The API server listens on the node's address
# (10.99.0.1, on a bridge of its own, reachable only from this machine; the second node's kubelet on
# 10.99.0.2 there); etcd and every other daemon on 127.0.0.1.
# shellcheck source=../stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh" k8s-cluster
CACHE="$ROOT/.cache/k8s"
BIN="$CACHE/bin"
RUN="$CACHE/run"
PKI="$RUN/pki"
LOGS="$RUN/logs"
PIDS="$RUN/pids"
export CONTAINERS_CONF="$ROOT/k8s/containers.conf"

NODE=deskgen-node
GPU_NODE=deskgen-gpu
NODE_IP=10.99.0.1
NODE_BRIDGE=dgk8s-node
CNI_BRIDGE=dgk8s-cni0
POD_CIDR=10.244.0.0/24
# The second real node: both pod bridges are on this machine, so pods reach each other with no routes.
NODE2=deskgen-node2
NODE2_IP=10.99.0.2
CNI_BRIDGE2=dgk8s-cni1
POD_CIDR2=10.244.1.0/24
SOCK2="$RUN/node2/containerd/containerd.sock"
SPARE_TAINT=deskgen.io/spare  # NoSchedule on the second node
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
API="https://$NODE_IP:6443"
ETCD_PORT=12379
SOCK="$RUN/containerd/containerd.sock"
PAUSE_IMAGE="registry.k8s.io/pause:3.10"
KUBECONFIG_ADMIN="$RUN/admin.kubeconfig"
# How long the HPA controller (KEDA's HPAs among them) keeps the highest recommendation before scaling
# down (Kubernetes' default: 5 min); short here so a test sees the scale-in.
HPA_DOWNSCALE_STABILIZATION=30s
# Sysctls the node's daemons may change (kubelet's kernel defaults, the bridge plugin's forwarding,
# kube-proxy's route_localnet): recorded at the first `up`, written back by `down`.
SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.ip_forward
         net.ipv4.conf.all.forwarding net.ipv6.conf.all.forwarding net.ipv4.conf.all.route_localnet
         net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
         net.netfilter.nf_conntrack_max)

kctl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
ctr_() { ctr --address "$SOCK" -n k8s.io "$@"; }
ctr_on() {  # node args...
  case "$1" in
    "$NODE") shift; ctr_ "$@" ;;
    "$NODE2") shift; ctr --address "$SOCK2" -n k8s.io "$@" ;;
    *) die "no real node named '$1' (nodes: $NODE, $NODE2)" ;;
  esac
}

# shellcheck source=cluster-config.sh
source "$ROOT/k8s/cluster-config.sh"

# --- daemons: started in their own session, PID recorded, stopped by that PID -------------------

pid_of() {  # prints the recorded PID when that process still runs
  local file="$PIDS/$1"
  [[ -f "$file" ]] || return 1
  local pid; pid="$(cat "$file")"
  kill -0 "$pid" 2>/dev/null && [[ "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" == *"$2"* ]] && echo "$pid"
}

start() {  # name marker command...: runs command unless a process recorded under name runs
  local name="$1" marker="$2"; shift 2
  if pid_of "$name" "$marker" >/dev/null; then return; fi
  setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name"
  log "$name started (pid $!)"
}

stop() {  # name marker [grace seconds]
  local pid i
  pid="$(pid_of "$1" "$2")" || { rm -f "$PIDS/$1"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < ${3:-30} * 5; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDS/$1"
  log "$1 stopped (pid $pid)"
}

wait_for() {  # description seconds command...: polls the command every second until it succeeds
  local what="$1" limit="$2" started=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - started < limit)) || die "$what: not ready after ${limit}s (logs: $LOGS)"
    sleep 1
  done
}

# --- the machine: bridge, snapshots to restore -------------------------------------------------

record_machine() {
  [[ -f "$RUN/machine.recorded" ]] && return
  local key
  : > "$RUN/sysctl.before"
  for key in "${SYSCTLS[@]}"; do
    sysctl -n "$key" >/dev/null 2>&1 && echo "$key=$(sysctl -n "$key")" >> "$RUN/sysctl.before"
  done
  iptables-save > "$RUN/iptables.before"
  ip6tables-save > "$RUN/ip6tables.before"
  touch "$RUN/machine.recorded"
}

node_network() {
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge
    ip addr add "$NODE_IP/32" dev "$NODE_BRIDGE"
    ip link set "$NODE_BRIDGE" up
  fi
  ip addr show dev "$NODE_BRIDGE" | grep -q " $NODE2_IP/" || ip addr add "$NODE2_IP/32" dev "$NODE_BRIDGE"
  # The second kubelet's cgroup root, in every hierarchy (cpuset's needs its CPUs and memory nodes set).
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    mkdir -p "$hierarchy$NODE2"
    [[ -f "${hierarchy}cpuset.cpus" && -z "$(cat "$hierarchy$NODE2/cpuset.cpus")" ]] || continue
    cat "${hierarchy}cpuset.cpus" > "$hierarchy$NODE2/cpuset.cpus"
    cat "${hierarchy}cpuset.mems" > "$hierarchy$NODE2/cpuset.mems"
  done
}

pause_image() {  # node
  grep -qx "$PAUSE_IMAGE" <<< "$(ctr_on "$1" images ls -q)" && return
  local dir="$RUN/pause-build"
  mkdir -p "$dir" && cp "$BIN/pause" "$dir/pause"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$dir/Dockerfile"
  podman build --quiet --network host --format docker -t "$PAUSE_IMAGE" "$dir" >/dev/null
  podman save --format docker-archive "$PAUSE_IMAGE" | ctr_on "$1" images import - >/dev/null
  rm -rf "$dir"
}

gpu_node() {
  kctl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $GPU_NODE
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $GPU_NODE
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
    # What NVIDIA GPU feature discovery puts on a GPU node; the chart's gpuScheduling requires the first.
    nvidia.com/gpu.present: "true"
    nvidia.com/gpu.count: "8"
    nvidia.com/gpu.product: fake-kwok-gpu
spec:
  taints:
    - {key: nvidia.com/gpu, value: "present", effect: NoSchedule}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", nvidia.com/gpu: "8"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110", nvidia.com/gpu: "8"}
EOF
}

# --- up / down -----------------------------------------------------------------------------------

up() {
  [[ $EUID == 0 ]] || die "run as root (it starts containerd, kubelet and kube-proxy)"
  local c
  for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kwok pause; do
    [[ -x "$BIN/$c" ]] || die "$BIN/$c is missing: run k8s/build-tools.sh first"
  done
  for c in etcd containerd runc iptables conntrack podman openssl; do
    command -v "$c" >/dev/null || die "$c is missing: apt-get install etcd-server containerd runc iptables conntrack podman"
  done
  configure
  record_machine
  node_network

  start etcd "--data-dir $RUN/etcd" etcd --name deskgen --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
    --initial-cluster deskgen=http://127.0.0.1:12380
  start_containerds
  start kube-apiserver "--etcd-servers=http://127.0.0.1:$ETCD_PORT" "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address="$NODE_IP" --advertise-address="$NODE_IP" \
    --secure-port=6443 --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction --allow-privileged=true \
    --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local --profiling=false \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --enable-aggregator-routing=true
  wait_for_containerds
  pause_image "$NODE"
  pause_image "$NODE2"
  wait_for "kube-apiserver" 120 kctl get --raw /readyz
  start kube-controller-manager "$RUN/controller-manager.kubeconfig" "$BIN/kube-controller-manager" \
    --kubeconfig="$RUN/controller-manager.kubeconfig" --bind-address=127.0.0.1 --leader-elect=false \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --use-service-account-credentials=true --cluster-signing-cert-file="$PKI/ca.crt" \
    --cluster-signing-key-file="$PKI/ca.key" --profiling=false \
    --horizontal-pod-autoscaler-downscale-stabilization="$HPA_DOWNSCALE_STABILIZATION"
  start kube-scheduler "$RUN/scheduler.kubeconfig" "$BIN/kube-scheduler" \
    --kubeconfig="$RUN/scheduler.kubeconfig" --bind-address=127.0.0.1 --leader-elect=false --profiling=false
  start kubelet "$RUN/kubelet.yaml" "$BIN/kubelet" --config="$RUN/kubelet.yaml" \
    --kubeconfig="$RUN/kubelet.kubeconfig" --root-dir="$RUN/kubelet" --cert-dir="$RUN/kubelet/pki" \
    --hostname-override="$NODE" --node-ip="$NODE_IP"
  start kubelet-node2 "$RUN/node2/kubelet.yaml" "$BIN/kubelet" --config="$RUN/node2/kubelet.yaml" \
    --kubeconfig="$RUN/kubelet-node2.kubeconfig" --root-dir="$RUN/node2/kubelet" --cert-dir="$RUN/node2/kubelet/pki" \
    --hostname-override="$NODE2" --node-ip="$NODE2_IP"
  start kube-proxy "$RUN/kube-proxy.yaml" "$BIN/kube-proxy" --config="$RUN/kube-proxy.yaml"
  start kwok "--manage-nodes-with-annotation-selector" "$BIN/kwok" --kubeconfig="$KUBECONFIG_ADMIN" \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=10.250.0.1/24 --node-ip=10.250.0.1 --server-address=127.0.0.1:10247 \
    --config="$CACHE/kwok-stages.yaml"
  wait_for "node $NODE" 180 kctl wait "node/$NODE" --for=condition=Ready --timeout=5s
  wait_for "node $NODE2" 180 kctl wait "node/$NODE2" --for=condition=Ready --timeout=5s
  gpu_node
  wait_for "node $GPU_NODE (KWOK)" 120 kctl wait "node/$GPU_NODE" --for=condition=Ready --timeout=5s
  wait_for "the default ServiceAccount" 120 kctl -n default get serviceaccount default
  log "up: nodes $NODE (real), $NODE2 (real, taint $SPARE_TAINT) and $GPU_NODE (KWOK, nvidia.com/gpu: 8);" \
    "KUBECONFIG=$KUBECONFIG_ADMIN"
}

down() {
  [[ -d "$RUN" ]] || { log "down: nothing to stop"; return; }
  # Pods first, while kubelet runs, so their network namespaces, veths and iptables rules go too.
  if pid_of kube-apiserver "--etcd-servers" >/dev/null && pid_of kubelet "$RUN/kubelet.yaml" >/dev/null; then
    local ns api
    # Aggregated APIs served by pods (KEDA's external metrics) would be unavailable at the next `up`.
    for api in $(kctl get apiservices -o jsonpath='{range .items[?(@.spec.service)]}{.metadata.name}{"\n"}{end}' 2>/dev/null); do
      kctl delete apiservice "$api" --wait=false >/dev/null 2>&1 || true
    done
    for ns in $(kctl get namespaces -o name 2>/dev/null | sed 's#namespace/##'); do
      case "$ns" in kube-system|kube-public|kube-node-lease|default) ;; *) kctl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true ;; esac
    done
    kctl delete pods --all -n default --grace-period=5 --wait=false >/dev/null 2>&1 || true
    local started=$SECONDS
    while ((SECONDS - started < 120)) && [[ -n "$(ctr_ tasks ls -q 2>/dev/null)$(ctr_on "$NODE2" tasks ls -q 2>/dev/null)" ]]; do
      sleep 2
    done
  fi
  stop kwok "--manage-nodes-with-annotation-selector"
  stop kube-proxy "$RUN/kube-proxy.yaml"
  stop kubelet "$RUN/kubelet.yaml"
  stop kubelet-node2 "$RUN/node2/kubelet.yaml"
  stop kube-scheduler "$RUN/scheduler.kubeconfig"
  stop kube-controller-manager "$RUN/controller-manager.kubeconfig"
  stop kube-apiserver "--etcd-servers"
  stop etcd "--data-dir $RUN/etcd"
  stop_containerds
  restore_machine
  log "down: every daemon stopped; bridges, iptables and sysctls as before"
}

start_containerds() {
  start containerd "$RUN/containerd/config.toml" containerd --config "$RUN/containerd/config.toml"
  start containerd-node2 "$RUN/node2/containerd/config.toml" containerd --config "$RUN/node2/containerd/config.toml"
}

wait_for_containerds() {
  wait_for "containerd" 60 ctr --address "$SOCK" version
  wait_for "containerd of $NODE2" 60 ctr --address "$SOCK2" version
}

stop_containerds() {
  stop_containerd "$NODE" containerd "$RUN/containerd/config.toml" "$SOCK"
  stop_containerd "$NODE2" containerd-node2 "$RUN/node2/containerd/config.toml" "$SOCK2"
}

share_images() {
  # The second node's image store becomes a hard-linked copy of the first's: the same images at no disk
  # cost (a stage image is ~7 GB), in seconds. Image layers are never written once unpacked (overlayfs
  # only reads its lower layers), so two stores may share their files; the two databases are copied. Only
  # while neither node has a container: copied metadata would carry the first node's containers, and the
  # pod network namespaces they name, to the second. Both containerds stop for the copy (their kubelets
  # reconnect), so the databases are copied at rest.
  [[ -z "$(ctr_on "$NODE" containers ls -q)$(ctr_on "$NODE2" containers ls -q)" ]] || {
    log "share-images: a node runs containers; load the second node's images with ctr-on instead"; return 1; }
  stop_containerds
  local from="$RUN/containerd/root" to="$RUN/node2/containerd/root" dir db
  rm -rf "$to" && mkdir -p "$to"
  for dir in io.containerd.content.v1.content io.containerd.snapshotter.v1.overlayfs io.containerd.metadata.v1.bolt; do
    cp -al "$from/$dir" "$to/$dir"
  done
  for db in io.containerd.metadata.v1.bolt/meta.db io.containerd.snapshotter.v1.overlayfs/metadata.db; do
    cp --remove-destination "$from/$db" "$to/$db"
  done
  start_containerds
  wait_for_containerds
  wait_for "node $NODE" 120 kctl wait "node/$NODE" --for=condition=Ready --timeout=5s
  wait_for "node $NODE2" 120 kctl wait "node/$NODE2" --for=condition=Ready --timeout=5s
  log "share-images: $NODE2 holds the images of $NODE (hard links)"
}

stop_containerd() {  # node name config socket: its containers killed, then containerd and their shims
  if pid_of "$2" "$3" >/dev/null; then
    local task
    for task in $(ctr_on "$1" tasks ls -q 2>/dev/null); do ctr_on "$1" tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true; done
    sleep 1
    for task in $(ctr_on "$1" tasks ls -q 2>/dev/null); do ctr_on "$1" tasks delete "$task" >/dev/null 2>&1 || true; done
  fi
  stop "$2" "$3"
  # The shims of containers started through this containerd (they outlive it by design).
  local pid
  for pid in $(pgrep -f -- "-address $4" || true); do kill -KILL "$pid" 2>/dev/null || true; done
}

restore_machine() {
  local ns mnt
  # Network namespaces the CRI pinned for pods that were not torn down, then the bridges.
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$ns" || true; done
  ip link show "$CNI_BRIDGE" >/dev/null 2>&1 && ip link delete "$CNI_BRIDGE"
  ip link show "$CNI_BRIDGE2" >/dev/null 2>&1 && ip link delete "$CNI_BRIDGE2"
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && ip link delete "$NODE_BRIDGE"
  # Mounts left under the run folder (pod volumes, container root filesystems), deepest first.
  for mnt in $(findmnt -rn -o TARGET | grep "^$RUN/" | sort -r || true); do umount -l "$mnt" 2>/dev/null || true; done
  # The pod cgroups the kubelets made (empty once the pods are gone), and the second one's cgroup root.
  for mnt in /sys/fs/cgroup/*/kubepods "/sys/fs/cgroup/"*/"$NODE2"; do
    [[ -d "$mnt" ]] && find "$mnt" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  if [[ -f "$RUN/machine.recorded" ]]; then
    restore_tables iptables ip
    restore_tables ip6tables ip6
    local line
    while IFS= read -r line; do sysctl -q -w "$line" >/dev/null || log "could not restore sysctl $line"; done < "$RUN/sysctl.before"
    rm -f "$RUN/machine.recorded"
  fi
  rm -rf "$RUN/cni/ipam" "$RUN/node2/cni/ipam"
}

restore_tables() {  # iptables|ip6tables nft-family: the tables as recorded; tables that did not exist go
  local tool="$1" family="$2" table
  "$tool-restore" < "$RUN/$tool.before"
  for table in filter nat mangle raw security; do
    grep -qx "\*$table" "$RUN/$tool.before" && continue
    "$tool-save" -t "$table" 2>/dev/null | grep -q '^\*' || continue
    if "$tool" -V 2>/dev/null | grep -q nf_tables && command -v nft >/dev/null; then
      nft delete table "$family" "$table" 2>/dev/null || true
    else
      "$tool" -t "$table" -F && "$tool" -t "$table" -X
    fi
  done
}

status() {
  local name
  for name in etcd containerd containerd-node2 kube-apiserver kube-controller-manager kube-scheduler kubelet \
              kubelet-node2 kube-proxy kwok; do
    if [[ -f "$PIDS/$name" ]] && kill -0 "$(cat "$PIDS/$name")" 2>/dev/null; then
      printf '%-24s running (pid %s)\n' "$name" "$(cat "$PIDS/$name")"
    else
      printf '%-24s stopped\n' "$name"
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  kubectl) shift; kctl "$@" ;;
  ctr) shift; ctr_ "$@" ;;
  ctr-on) shift; ctr_on "$@" ;;
  share-images) share_images ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_ADMIN" ;;
  *) die "usage: $0 up|down|status|kubectl ARGS|ctr ARGS|ctr-on NODE ARGS|share-images|env" ;;
esac
