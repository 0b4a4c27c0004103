#!/usr/bin/env bash
# deploy/check.sh — validates the deployment files, installing the checkers if missing:
#   - docker-compose.yml with Debian's docker-compose (`config -q`), every service built
#     from the one Dockerfile, and Prometheus scraping each of them;
#   - deploy/k8s/*.yaml against the Kubernetes API schemas (kubernetes-validate from PyPI,
#     strict: unknown fields are errors), every manifest listed in kustomization.yaml;
#   - the Grafana dashboard JSON that the compose stack provisions, and that every metric
#     it queries is registered by the code;
#   - that every service starts with exactly the environment docker-compose.yml and the
#     Kubernetes manifests give it, as the deployed non-root user, from a read-only working
#     directory, with its volumes as empty directories, and becomes ready, without a
#     secret in its log or /metrics (deploy/start_as_deployed.py). Needs the binaries
#     (`make build`, or CHECK_DEPLOY_BIN_DIR) and the local Kafka and ClickHouse.
# Run by `make test` (target check-deploy); needs no Docker engine and no cluster.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=deploy/local/lib.sh
source "$ROOT/deploy/local/lib.sh"

VENV="$LOCAL_DIR/venv-deploy"
KUBERNETES_VALIDATE_VERSION=1.37.0
K8S_VERSION=1.33.0
failures=0
fail() { printf 'check-deploy: FAIL %s\n' "$*" >&2; failures=$((failures + 1)); }

if ! command -v docker-compose >/dev/null; then
  log "apt: installing docker-compose"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends docker-compose >/dev/null
fi
if [[ ! -x "$VENV/bin/kubernetes-validate" ]] \
  || [[ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null)" != *"$KUBERNETES_VALIDATE_VERSION"* ]]; then
  log "pip: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
  # A fresh venv: one left by an older version, or made under another path (its scripts
  # name their interpreter by absolute path), would not work.
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

# --- compose ------------------------------------------------------------------
# The variables docker-compose.yml requires (deploy/secrets.sh makes real ones).
export TRAFFSURE_CLICK_HASH_KEYS=1:check-deploy-not-a-secret
export TRAFFSURE_ADMIN_PASSWORD=check-deploy-not-a-secret
export TRAFFSURE_SESSION_SIGNING_KEY=check-deploy-not-a-secret-check-deploy
compose_services=$(docker-compose -f "$ROOT/docker-compose.yml" config --services) \
  || fail "docker-compose config rejected docker-compose.yml"
docker-compose -f "$ROOT/docker-compose.yml" config -q || fail "docker-compose config -q"
for dir in "$ROOT"/services/*/; do
  svc=$(basename "$dir")
  grep -qx "$svc" <<<"$compose_services" || fail "service $svc is missing from docker-compose.yml"
  grep -q "$svc" "$ROOT/Dockerfile" || fail "service $svc is not accepted by the Dockerfile"
  grep -q "names: \[$svc\]" "$ROOT/deploy/observability/prometheus.yml" \
    || fail "Prometheus does not scrape $svc"
  [[ -f "$ROOT/deploy/k8s/$svc.yaml" ]] || fail "deploy/k8s/$svc.yaml is missing"
done

# --- Kubernetes ---------------------------------------------------------------
manifests=()
for f in "$ROOT"/deploy/k8s/*.yaml; do
  [[ $(basename "$f") == kustomization.yaml ]] && continue
  manifests+=("$f")
  case $(basename "$f") in
    secret.example.yaml) ;;
    *) grep -q "^  - $(basename "$f")\$" "$ROOT/deploy/k8s/kustomization.yaml" \
      || fail "$(basename "$f") is not listed in deploy/k8s/kustomization.yaml" ;;
  esac
done
"$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${manifests[@]}" \
  || fail "Kubernetes manifests do not validate"

# --- Grafana ------------------------------------------------------------------
# Every metric a panel queries must be registered somewhere in the Rust code (a histogram
# by its base name), so a renamed metric cannot leave a panel silently empty.
python3 - "$ROOT/deploy/observability/grafana/dashboards/traffsure.json" "$ROOT" <<'PY' || fail "Grafana dashboard"
import json, pathlib, re, sys
dash = json.load(open(sys.argv[1]))
assert dash["uid"] and dash["panels"], "dashboard has no uid or no panels"
code = "".join(
    path.read_text(errors="replace")
    for folder in ("services", "crates")
    for path in (pathlib.Path(sys.argv[2]) / folder).rglob("*.rs")
)
missing = []
for panel in dash["panels"]:
    assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    for target in panel["targets"]:
        for name in re.findall(r"\btraffsure_[a-z0-9_]+", target["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if f'"{name}"' not in code and f'"{base}"' not in code:
                missing.append(f"{panel['title']}: {name}")
assert not missing, "metrics no code registers: " + ", ".join(missing)
print(f"grafana: {len(dash['panels'])} panels, every queried metric is registered")
PY

# --- the services, started as deployed -----------------------------------------
BIN_DIR="${CHECK_DEPLOY_BIN_DIR:-$ROOT/target/debug}"
for source in compose k8s; do
  as_root "$VENV/bin/python" "$ROOT/deploy/start_as_deployed.py" "$source" "$ROOT" "$BIN_DIR" \
    || fail "the services do not start as $source deploys them"
done

if ((failures)); then
  die "check-deploy: $failures problem(s)"
fi
log "check-deploy: docker-compose.yml, deploy/k8s (${#manifests[@]} files, Kubernetes $K8S_VERSION), the Grafana dashboard and the services as deployed are valid"
