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
#   - deploy/Dockerfile against the workspace (deploy/check_manifests.py dockerfile).
# Installs its tools on first use (pinned, from PyPI; kustomize from kubectl or, failing
# that, built from its Go module) into $ENROLL_TOOLS_DIR; later runs reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK_JSONSCHEMA_VERSION=0.39.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# Oldest (native gRPC probes, PDB unhealthyPodEvictionPolicy) and newest supported.
KUBERNETES_VERSIONS=(1.27.0 1.37.0)
# Only when no kubectl with a kustomize v5 is present.
KUSTOMIZE_MODULE=sigs.k8s.io/kustomize/kustomize/v5
KUSTOMIZE_VERSION=v5.5.0

TOOLS_DIR="${ENROLL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/enroll-deploy-tools}"
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
  if command -v kubectl >/dev/null \
    && [ "$(kubectl version --client 2>/dev/null | grep -i '^kustomize' | kustomize_major)" -ge 5 ] 2>/dev/null; then
    KUSTOMIZE=(kubectl kustomize)
    return
  fi
  for candidate in "$TOOLS_DIR/bin/kustomize" "$(command -v kustomize || true)"; do
    if [ -x "$candidate" ] && [ "$("$candidate" version 2>/dev/null | kustomize_major)" -ge 5 ] 2>/dev/null; then
      KUSTOMIZE=("$candidate" build)
      return
    fi
  done
  install_kustomize
  KUSTOMIZE=("$TOOLS_DIR/bin/kustomize" build)
}

# kustomize has no package in the registries we reach (Debian's kubectl is 1.20, whose
# kustomize v2 lacks components), but it is a Go module: build it with Debian's Go.
install_kustomize() {
  echo "no kubectl/kustomize v5 found; building kustomize $KUSTOMIZE_VERSION from its Go module"
  local go_bin
  go_bin=$(find_go) || {
    apt-get update -qq
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null \
      || ! go_bin=$(find_go); then
      # Debian 12's golang-go is 1.19; its backports carry a newer Go.
      echo "deb http://deb.debian.org/debian bookworm-backports main" \
        >/etc/apt/sources.list.d/enroll-bookworm-backports.list
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports golang-1.23-go >/dev/null
      go_bin=$(find_go)
    fi
  }
  mkdir -p "$TOOLS_DIR/bin"
  GOTOOLCHAIN=local GOBIN="$TOOLS_DIR/bin" GOPATH="$TOOLS_DIR/go" GOFLAGS=-modcacherw \
    "$go_bin" install "$KUSTOMIZE_MODULE@$KUSTOMIZE_VERSION"
}

# Prints a Go binary of at least 1.22 (kustomize v5.5's minimum), or fails.
find_go() {
  local candidate minor
  for candidate in /usr/lib/go-1.2[2-9]/bin/go "$(command -v go || true)"; do
    [ -x "$candidate" ] || continue
    minor=$("$candidate" env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
    if [ -n "$minor" ] && [ "$minor" -ge 22 ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
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
  local label=$1 directory=$2 rendered version
  rendered=$(mktemp)
  "${KUSTOMIZE[@]}" "$directory" >"$rendered" \
    || { echo "FAILED: kustomize build $label" >&2; rm -f "$rendered"; return 1; }
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "$rendered" \
      || { echo "FAILED: $label against Kubernetes $version" >&2; rm -f "$rendered"; return 1; }
  done
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

echo "deploy validation ok in $(( $(date +%s) - started )) s"
