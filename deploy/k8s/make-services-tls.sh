#!/usr/bin/env bash
# Makes the mutual-TLS material deploy/k8s/base expects, without cert-manager:
# a CA, one certificate per layer (server auth, DNS name pullguard-<layer>,
# the Service the gateway dials) and one for the gateway (client auth), and
# writes them as Secrets pullguard-<component>-tls (ca.crt, tls.crt, tls.key,
# the layout cert-manager uses) to OUT_DIR/secrets.yaml.
#
#   deploy/k8s/make-services-tls.sh OUT_DIR [NAMESPACE] [DAYS]
#   kubectl apply -n NAMESPACE -f OUT_DIR/secrets.yaml
#
# The CA key stays in OUT_DIR/ca.key: keep it offline, or delete it and run
# the script again to rotate everything. Needs openssl.
set -euo pipefail
out="${1:?usage: $0 OUT_DIR [NAMESPACE] [DAYS]}"
namespace="${2:-default}"
days="${3:-365}"
layers=(analysis fetcher format hashverify source signature vulnerability)

mkdir -p "$out"
chmod 700 "$out"
umask 077
cd "$out"

openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 \
  -days "$days" -subj "/CN=pullguard services CA" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout ca.key -out ca.crt 2>/dev/null

issue() { # NAME USAGE SUBJECT_ALT_NAMES
  local name="$1" usage="$2" sans="$3"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -subj "/CN=$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$usage"
    if [ -n "$sans" ]; then echo "subjectAltName=$sans"; fi
  } >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
    -days "$days" -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

b64() { base64 -w0 <"$1"; }

secret() { # COMPONENT FILE_STEM
  cat <<EOF
---
apiVersion: v1
kind: Secret
metadata:
  name: pullguard-$1-tls
  namespace: $namespace
  labels: {app.kubernetes.io/name: pullguard, app.kubernetes.io/component: $1}
type: kubernetes.io/tls
data:
  ca.crt: $(b64 ca.crt)
  tls.crt: $(b64 "$2.crt")
  tls.key: $(b64 "$2.key")
EOF
}

for layer in "${layers[@]}"; do
  service="pullguard-$layer"
  issue "$service" serverAuth \
    "DNS:$service,DNS:$service.$namespace,DNS:$service.$namespace.svc,DNS:$service.$namespace.svc.cluster.local"
done
issue pullguard-gateway clientAuth ""

{
  for layer in "${layers[@]}"; do secret "$layer" "pullguard-$layer"; done
  secret gateway pullguard-gateway
} >secrets.yaml
echo "wrote $out/secrets.yaml (7 Secrets for namespace $namespace); CA key in $out/ca.key"
