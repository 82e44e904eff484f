#!/bin/bash
# assisted.sh: hands the pre-staging overrides of this directory to Assisted Service. Written by
# prestage for the partition labelled @LABEL@.
#
# Usage: assisted.sh SERVICE_URL INFRA_ENV_ID [HOST_ID]
#
#   SERVICE_URL   e.g. https://api.openshift.com or http://assisted.example:8090
#   INFRA_ENV_ID  the infra-env whose discovery ISO the server boots
#   HOST_ID       a host registered in it: also sets its install-stage override and installer
#                 arguments (run again with each host once it has registered)
#
# The token, when the service needs one, comes from the environment (ASSISTED_TOKEN), is sent as
# `Authorization: Bearer ...` through a file descriptor (never on a command line) and is never
# printed. Extra curl options (e.g. --cacert FILE) can be given in ASSISTED_CURL_OPTS.
#
# Without HOST_ID:  PATCH /api/assisted-install/v2/infra-envs/INFRA_ENV_ID   discovery.patch
# With HOST_ID also: PATCH .../infra-envs/INFRA_ENV_ID/hosts/HOST_ID/ignition  pointer.patch
#                    PATCH .../infra-envs/INFRA_ENV_ID/hosts/HOST_ID/installer-args
#                          {"args": <installer-args.json>}

set -euo pipefail

die() { printf 'assisted.sh: %s\n' "$*" >&2; exit 2; }

if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then
    die "usage: assisted.sh SERVICE_URL INFRA_ENV_ID [HOST_ID]"
fi
URL=${1%/}
INFRA_ENV=$2
HOST=${3:-}
ID_RE='^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
[[ ${URL} =~ ^https?://[^[:space:]]+$ ]] || die "SERVICE_URL: not an http(s) URL"
[[ ${INFRA_ENV} =~ ${ID_RE} ]] || die "INFRA_ENV_ID: not a UUID"
[ -z "${HOST}" ] || [[ ${HOST} =~ ${ID_RE} ]] || die "HOST_ID: not a UUID"

DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
for f in discovery.patch pointer.patch installer-args.json; do
    [ -f "${DIR}/${f}" ] || die "${DIR}/${f}: not found"
done
command -v curl >/dev/null 2>&1 || die "curl is not installed"

read -r -a CURL_OPTS <<< "${ASSISTED_CURL_OPTS:-}"
API=${URL}/api/assisted-install/v2/infra-envs/${INFRA_ENV}

# PATCH URL BODY_FILE: the body from a file, the token (if any) as a header read from a pipe.
patch() {
    local url=$1 body=$2 code
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X PATCH ${CURL_OPTS[@]+"${CURL_OPTS[@]}"} \
        -H 'Content-Type: application/json' \
        -H @<(if [ -n "${ASSISTED_TOKEN:-}" ]; then printf 'Authorization: Bearer %s\n' "${ASSISTED_TOKEN}"; fi) \
        --data-binary "@${body}" "${url}") || die "PATCH ${url}: curl failed"
    case "${code}" in
        2??) printf 'assisted.sh: PATCH %s: HTTP %s\n' "${url}" "${code}" >&2 ;;
        *) die "PATCH ${url}: HTTP ${code}" ;;
    esac
}

patch "${API}" "${DIR}/discovery.patch"
if [ -n "${HOST}" ]; then
    patch "${API}/hosts/${HOST}/ignition" "${DIR}/pointer.patch"
    patch "${API}/hosts/${HOST}/installer-args" <(printf '{"args":%s}\n' "$(cat -- "${DIR}/installer-args.json")")
fi
