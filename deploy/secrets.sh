#!/usr/bin/env bash
# deploy/secrets.sh — prints fresh random secrets for docker-compose.yml as .env lines:
#   deploy/secrets.sh > .env
# Keep the file private (it is in .dockerignore and .gitignore). For Kubernetes, the same
# values go into the secrets of deploy/k8s/secret.example.yaml.
set -euo pipefail
random() { head -c "$1" /dev/urandom | base64 | tr -d '\n/+='; }
printf 'TRAFFSURE_CLICK_HASH_KEYS=1:%s\n' "$(random 24)"
printf 'TRAFFSURE_ADMIN_PASSWORD=%s\n' "$(random 18)"
printf 'TRAFFSURE_SESSION_SIGNING_KEY=%s\n' "$(random 48)"
printf 'TRAFFSURE_API_KEYS=%s\n' "$(random 24)"
