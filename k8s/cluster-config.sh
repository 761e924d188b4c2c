# shellcheck shell=bash
# The local cluster's certificates and configuration files (sourced by k8s/cluster.sh, which sets the paths
# and addresses): a CA and client certificates per component, their kubeconfigs, and the configuration of
# containerd, the CNI bridge, kubelet and kube-proxy, all under .cache/k8s/run. Existing files are kept.

authority() {  # name common-name: a self-signed CA
  [[ -f "$PKI/$1.crt" ]] && return
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -subj "/CN=$2" -days 3650 \
    -out "$PKI/$1.crt" 2>/dev/null
}

cert() {  # name subject [extensions] [CA, default: the cluster CA]: a key and a certificate signed by that CA
  [[ -f "$PKI/$1.crt" ]] && return
  local ca="${4:-ca}"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -subj "$2" -out "$PKI/$1.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial -days 3650 \
    -out "$PKI/$1.crt" ${3:+-extfile <(printf '%s' "$3")} 2>/dev/null
  rm -f "$PKI/$1.csr"
}

kubeconfig() {  # name user
  local file="$RUN/$1.kubeconfig"
  [[ -f "$file" ]] && return
  cat > "$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: deskgen-local
  cluster: {server: "$API", certificate-authority: "$PKI/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$PKI/$2.crt", client-key: "$PKI/$2.key"}
contexts:
- name: deskgen-local
  context: {cluster: deskgen-local, user: $1}
current-context: deskgen-local
EOF
}

put() {  # file: standard input written to file unless the file already holds the same
  local new="$1.new"
  cat > "$new"
  if cmp -s "$new" "$1"; then rm "$new"; else mv "$new" "$1"; fi
}

node_config() {  # address folder socket cni-bridge pod-subnet [kubelet settings]: a real node's containerd, CNI
  # bridge and kubelet configuration under folder
  local ip="$1" dir="$2" sock="$3" bridge="$4" subnet="$5" extra="${6:-}"
  mkdir -p "$dir/cni/net.d" "$dir/containerd" "$dir/kubelet"
  cat > "$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
EOF
  cat > "$dir/cni/net.d/10-deskgen.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "deskgen",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$subnet"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$dir/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat > "$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: "unix://$sock"
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
$extra
EOF
}

configure() {
  mkdir -p "$PKI" "$LOGS" "$PIDS"
  chmod 700 "$RUN"
  authority ca deskgen-local-ca
  # The aggregation layer: the API server proxies to extension API servers (KEDA's metrics adapter) with
  # this client certificate, from a CA of its own that they trust for the X-Remote-* request headers.
  authority front-proxy-ca deskgen-front-proxy-ca
  cert front-proxy-client "/CN=front-proxy-client" "extendedKeyUsage=clientAuth" front-proxy-ca
  local san="DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  san+=",DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP"
  cert apiserver "/CN=kube-apiserver" "subjectAltName=$san
extendedKeyUsage=serverAuth"
  cert admin "/O=system:masters/CN=deskgen-admin" "extendedKeyUsage=clientAuth"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
  cert controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  cert scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
  cert node "/O=system:nodes/CN=system:node:$NODE" "extendedKeyUsage=clientAuth"
  cert kube-proxy "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth"
  if [[ ! -f "$PKI/sa.key" ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  kubeconfig admin admin
  kubeconfig controller-manager controller-manager
  kubeconfig scheduler scheduler
  kubeconfig kubelet node
  kubeconfig kube-proxy kube-proxy

  node_config "$NODE_IP" "$RUN" "$SOCK" "$CNI_BRIDGE" "$POD_CIDR"
  # The spare node takes only pods that tolerate its taint (the drain test's generator), so only their images
  # are loaded into its containerd; its pods' cgroups and logs are its own.
  cert node2 "/O=system:nodes/CN=system:node:$NODE2" "extendedKeyUsage=clientAuth"
  kubeconfig kubelet-node2 node2
  node_config "$NODE2_IP" "$RUN/node2" "$SOCK2" "$CNI_BRIDGE2" "$POD_CIDR2" "healthzPort: 10258
cgroupRoot: /$NODE2
podLogsDir: $RUN/node2/pod-logs
registerWithTaints: [{key: $SPARE_TAINT, value: \"true\", effect: NoSchedule}]"
  # Rewritten only when it changes: kube-proxy exits when its configuration file does.
  put "$RUN/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$RUN/kube-proxy.kubeconfig"}
mode: iptables
hostnameOverride: $NODE
clusterCIDR: $CLUSTER_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables: {masqueradeAll: true, localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0}
EOF
}
