#!/usr/bin/env bash
# Helm for the chart in infra/helm/cloudarb: the pinned version, built from the Go module proxy into .cache/bin.
#   scripts/helm.sh install          build helm (skipped when .cache/bin/helm is already that version; needs go)
#   scripts/helm.sh check            lint + render the chart with each ci/*-values.yaml (what tests/test_helm.py runs first)
#   scripts/helm.sh ARGS...          run the pinned helm, e.g. scripts/helm.sh template cloudarb infra/helm/cloudarb -f my.yaml
# Bump HELM_VERSION after checking what the module proxy serves (`go list -m -versions helm.sh/helm/v4`).
set -euo pipefail
cd "$(dirname "$0")/.."
HELM_VERSION=v4.3.2
BIN=$PWD/.cache/bin/helm
CHART=infra/helm/cloudarb

install_helm() {
  # `helm version` of a `go install` build says only "v4.3" (releases set the rest by -ldflags): ask Go which module
  # version the binary was built from
  if [ -x "$BIN" ] && { ! command -v go >/dev/null || go version -m "$BIN" 2>/dev/null \
      | grep -Eq "^[[:space:]]+mod[[:space:]]+helm.sh/helm/v4[[:space:]]+$HELM_VERSION[[:space:]]"; }; then
    return 0
  fi
  command -v go >/dev/null || { echo "helm.sh: go not found: the chart tests will skip (apt-get install golang)" >&2; return 1; }
  echo "helm.sh: building helm $HELM_VERSION from the Go module proxy (the first build takes several minutes)" >&2
  mkdir -p "$(dirname "$BIN")"
  GOBIN=$(dirname "$BIN") GOFLAGS=-buildvcs=false go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
}

case "${1:-}" in
  install) install_helm ;;
  check)
    install_helm
    for f in "$CHART"/ci/*-values.yaml; do
      "$BIN" lint --strict "$CHART" -f "$f" >/dev/null
      n=$("$BIN" template cloudarb "$CHART" -f "$f" | grep -c '^kind:')
      echo "$f: lint ok, $n objects"
    done ;;
  "") sed -n '2,6p' "$0"; exit 2 ;;
  *) [ -x "$BIN" ] || install_helm; exec "$BIN" "$@" ;;
esac
