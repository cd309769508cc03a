#!/bin/sh
# `make up` runs this first. Without a .env, it writes one from .env.example with a random value
# for every change-me secret; an .env that still holds a change-me value is refused. It never
# prints a secret: they stay in .env (mode 600), e.g. the first operator's password.
set -eu
cd "$(dirname "$0")/.."

random_secret() {
  # 32 letters and digits: valid everywhere (URLs, the realm import, the proxy's cookie key).
  LC_ALL=C tr -dc 'A-Za-z0-9' < /dev/urandom | head -c 32
}

if [ ! -f .env ]; then
  umask 077
  tmp=$(mktemp .env.XXXXXX)
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      # MinIO's KMS key: a name and 32 random bytes in base64.
      MINIO_KMS_SECRET_KEY=change-me*)
        printf 'MINIO_KMS_SECRET_KEY=repovault-key:%s\n' "$(head -c 32 /dev/urandom | base64)" ;;
      [A-Za-z_]*=change-me*) printf '%s=%s\n' "${line%%=*}" "$(random_secret)" ;;
      *) printf '%s\n' "$line" ;;
    esac
  done < .env.example > "$tmp"
  mv "$tmp" .env
  echo "wrote .env with random secrets; the first operator signs in as REPOVAULT_OPERATOR_USERNAME"
  echo "with REPOVAULT_OPERATOR_PASSWORD, both in .env"
fi

left=$(sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=change-me.*/\1/p' .env | tr '\n' ' ')
if [ -n "$left" ]; then
  echo "error: .env still holds placeholder values for: $left- replace them (docs/deployment.md)" >&2
  exit 1
fi
