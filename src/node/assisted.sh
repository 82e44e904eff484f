#!/bin/bash
# assisted.sh: merges the pre-staging overrides of this directory into what Assisted Service
# holds. Written by prestage for the partition labelled @LABEL@.
#
# Usage: assisted.sh SERVICE_URL INFRA_ENV_ID [HOST_ID]
#
#   SERVICE_URL   e.g. https://api.openshift.com or http://assisted.example:8090
#   INFRA_ENV_ID  the infra-env whose discovery ISO the server boots
#   HOST_ID       a host registered in it: also sets its install-stage override and installer
#                 arguments (run again with each host once it has registered)
#
# Needs bash, curl and jq (1.6 or later: dnf install jq, apt install jq, brew install jq).
#
# The token, when the service needs one, comes from the environment (ASSISTED_TOKEN), is sent as
# `Authorization: Bearer ...` through a file descriptor (never on a command line) and is never
# printed. Extra curl options (e.g. --cacert FILE) can be given in ASSISTED_CURL_OPTS.
#
# What the service already has is kept: each setting is read first (GET), merged with ours,
# and sent back (PATCH) only when the merge changed it.
#   infra-env:  GET  /api/assisted-install/v2/infra-envs/INFRA_ENV_ID
#               PATCH the same, {"ignition_config_override": <its override merged with discovery.ign>}
#   host:       GET  .../infra-envs/INFRA_ENV_ID/hosts/HOST_ID
#               PATCH .../hosts/HOST_ID/ignition        {"config": <its override merged with install.ign>}
#               PATCH .../hosts/HOST_ID/installer-args  {"args": <its arguments + --save-partlabel @LABEL@>}
#   cluster:    (payloads with cluster manifests: the infra-env's cluster_id)
#               GET  /api/assisted-install/v2/clusters/CLUSTER_ID/manifests
#               POST the same, {"folder": "openshift", "file_name": F, "content": <base64>} per
#               manifest it lacks; one it holds with other contents is replaced (PATCH, with
#               "updated_content") when prestage wrote it, else refused before anything is sent
# Ignition overrides are merged as Ignition merges configs: every file, directory, link and unit
# of both is kept; a path or unit name both define is refused, naming both (an entry prestage
# wrote earlier is replaced); the existing spec version (3.1.0 or 3.2.0) is kept. Installer
# arguments are kept, with --save-partlabel @LABEL@ added unless it is there. Messages name
# paths and unit names only: the overrides' contents (which may hold secrets) are never printed.

set -euo pipefail
umask 077

die() { printf 'assisted.sh: %s\n' "$*" >&2; exit 2; }
say() { printf 'assisted.sh: %s\n' "$*" >&2; }

if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then
    die "usage: assisted.sh SERVICE_URL INFRA_ENV_ID [HOST_ID]"
fi
URL=${1%/}
INFRA_ENV=$2
HOST=${3:-}
LABEL=@LABEL@
MANIFESTS=(@MANIFESTS@)
ID_RE='^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
[[ ${URL} =~ ^https?://[^[:space:]]+$ ]] || die "SERVICE_URL: not an http(s) URL"
[[ ${INFRA_ENV} =~ ${ID_RE} ]] || die "INFRA_ENV_ID: not a UUID"
[ -z "${HOST}" ] || [[ ${HOST} =~ ${ID_RE} ]] || die "HOST_ID: not a UUID"

DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
for f in discovery.ign install.ign ${MANIFESTS[@]+"${MANIFESTS[@]}"}; do
    [ -f "${DIR}/${f}" ] || die "${DIR}/${f}: not found"
done
command -v curl >/dev/null 2>&1 || die "curl is not installed"
command -v jq >/dev/null 2>&1 ||
    die "jq is not installed; it merges our overrides into the service's (dnf install jq, apt install jq, brew install jq)"

read -r -a CURL_OPTS <<< "${ASSISTED_CURL_OPTS:-}"
API=${URL}/api/assisted-install/v2/infra-envs/${INFRA_ENV}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/assisted-sh.XXXXXX") || die "cannot create a work directory"
trap 'rm -rf -- "${WORK}"' EXIT

# call METHOD URL OUT [BODY_FILE]: the answer into OUT; the token (if any) as a header read
# from a pipe; fails on anything but 2xx, printing the method, URL and status only.
call() {
    local method=$1 url=$2 out=$3 body=${4:-} code
    local data=(-H 'Accept: application/json')
    if [ -n "${body}" ]; then
        data+=(-H 'Content-Type: application/json' --data-binary "@${body}")
    fi
    code=$(curl -sS -o "${out}" -w '%{http_code}' -X "${method}" ${CURL_OPTS[@]+"${CURL_OPTS[@]}"} \
        -H @<(if [ -n "${ASSISTED_TOKEN:-}" ]; then printf 'Authorization: Bearer %s\n' "${ASSISTED_TOKEN}"; fi) \
        "${data[@]}" "${url}") || die "${method} ${url}: curl failed"
    case "${code}" in
        2??) say "${method} ${url}: HTTP ${code}" ;;
        *) die "${method} ${url}: HTTP ${code}" ;;
    esac
}

# The merge, in jq. Its errors start with "merge: " and name paths only; any other jq error
# (which could quote the input) is never shown.
MERGE_JQ=
# (read returns 1 at the end of the text, which is where it stops.)
IFS= read -r -d '' MERGE_JQ <<'JQ' || true
def fail($m): error("merge: " + $m);
# try/catch, whose catch jq 1.6 also runs for errors raised after its body: collected first.
def attempt(f; g): [try f catch g] | .[0];
def clean: [split("/")[] | select(. != "" and . != ".")]
  | reduce .[] as $c ([]; if $c == ".." then .[:-1] else . + [$c] end)
  | "/" + join("/");
def loader_text: attempt(capture("^data:(?<h>[^,]*),(?<b>.*)$")
  | if (.h | endswith(";base64")) then (.b | @base64d) else "" end; "") // "";
def prestage_file: (.contents.source? // "") as $s
  | ($s | type) == "string"
    and (($s | loader_text) as $t | ($t | startswith("#!/bin/bash\n# extract-"))
      and ($t[0:512] | contains("Written by prestage for\n# the `")));
def prestage_unit: (.contents? // "") as $c
  | ($c | type) == "string"
    and ((($c | startswith("[Unit]\nDescription=Load the pre-staged "))
        and ($c | contains("\nDocumentation=file:///usr/local/bin/extract-")))
      or ($c | startswith("[Unit]\nDescription=Create /var/lib/prestage/store, "))
      or ($c | startswith("[Unit]\nDescription=The pre-staged container image store ")));
def list($cfg; $a; $b; $what):
  ($cfg[$a] // {}) as $o
  | if ($o | type) != "object" then fail("\($what): \($a): not an object (a JSON \($o | type))") else . end
  | ($o[$b] // []) as $l
  | if ($l | type) != "array" then fail("\($what): \($a).\($b): not a list (a JSON \($l | type))") else $l end;
def add_file($f; $what):
  . as $cfg
  | ($f.path | clean) as $p
  | [ ("files", "directories", "links") as $k
      | list($cfg; "storage"; $k; $what) | to_entries[]
      | .key as $i | .value as $e
      | if ($e.path? | type) != "string" then fail("\($what): storage.\($k)[\($i)]: no path") else . end
      | ($e.path | clean) as $tp
      | if $tp == $p then
          if $k == "files" and $e == $f then {i: $i, act: "keep"}
          elif $k == "files" and ($e | prestage_file) then {i: $i, act: "replace"}
          else fail("\($what): storage.\($k)[\($i)] (\($e.path)) and prestage's loader (storage.files, \($f.path)) both define \($p): Ignition would keep one of them; move or remove yours")
          end
        elif $k != "directories" and ($p | startswith($tp + "/")) then
          fail("\($what): storage.\($k)[\($i)] (\($e.path)) is a \(if $k == "files" then "file" else "link" end) where prestage's loader (\($f.path)) needs a directory")
        else empty end ] as $hits
  | ($hits | last) as $h
  | if $h == null then {cfg: ($cfg | .storage = ((.storage // {}) | .files = ((.files // []) + [$f]))), changed: true}
    elif $h.act == "keep" then {cfg: $cfg, changed: false}
    else {cfg: ($cfg | .storage.files[$h.i] = $f), changed: true} end;
def add_unit($u; $what):
  . as $cfg
  | [ list($cfg; "systemd"; "units"; $what) | to_entries[]
      | .key as $i | .value as $e
      | if ($e.name? | type) != "string" then fail("\($what): systemd.units[\($i)]: no name") else . end
      | select($e.name == $u.name)
      | if $e == $u then {i: $i, act: "keep"}
        elif ($e | prestage_unit) then {i: $i, act: "replace"}
        else fail("\($what): systemd.units[\($i)] (\($e.name)) and prestage's unit (systemd.units, \($u.name)) are one unit: Ignition would keep one of them; rename or remove yours")
        end ] as $hits
  | ($hits | last) as $h
  | if $h == null then {cfg: ($cfg | .systemd = ((.systemd // {}) | .units = ((.units // []) + [$u]))), changed: true}
    elif $h.act == "keep" then {cfg: $cfg, changed: false}
    else {cfg: ($cfg | .systemd.units[$h.i] = $u), changed: true} end;
def merge_ign($ours; $what):
  (. // "") as $text
  | if ($text | test("^\\s*$")) then {changed: true, value: $ours}
    else
      attempt($text | fromjson; fail("\($what): not JSON")) as $cfg
      | if ($cfg | type) != "object" then fail("\($what): not an Ignition config: a JSON \($cfg | type), not an object") else . end
      | attempt($cfg.ignition.version; null) as $v
      | if $v == null then fail("\($what): not an Ignition config: it has no ignition.version")
        elif ($v | type) != "string" then fail("\($what): ignition.version: not a string (a JSON \($v | type))")
        elif ($v == "3.1.0" or $v == "3.2.0") | not then
          fail("\($what): ignition.version \($v): \(if ($v | startswith("3.")) then "" else "not Ignition 3.x; " end)Assisted Service takes 3.1.0 and 3.2.0 overrides only")
        else . end
      | if (attempt($cfg.ignition.config.replace.source; null) // null) != null then
          fail("\($what): ignition.config.replace: the override replaces itself with another config, which would drop prestage's loader and unit; merge them into that config instead")
        else . end
      | reduce $ours.storage.files[] as $f ({cfg: $cfg, changed: false};
          (.cfg | add_file($f; $what)) as $r | {cfg: $r.cfg, changed: (.changed or $r.changed)})
      | reduce $ours.systemd.units[] as $u (.;
          (.cfg | add_unit($u; $what)) as $r | {cfg: $r.cfg, changed: (.changed or $r.changed)})
      | {changed: .changed, value: .cfg}
    end;
def opt_values($a; $opt):
  [range(0; $a | length) as $i | $a[$i] as $x
    | if $x == $opt then ($a[$i + 1] // empty)
      elif ($x | startswith($opt + "=")) then $x[($opt | length) + 1:]
      else empty end];
def merge_args($part; $what):
  (. // "") as $text
  | if ($text | test("^\\s*$")) then {changed: true, value: ["--save-partlabel", $part], partindex: []}
    else
      attempt($text | fromjson; fail("\($what): not JSON")) as $a
      | if ($a | type) != "array" then fail("\($what): not a JSON list of strings: a JSON \($a | type)") else . end
      | ([$a | to_entries[] | select(.value | type != "string")] | first) as $bad
      | if $bad != null then fail("\($what): not a JSON list of strings: item \($bad.key) is a JSON \($bad.value | type)") else . end
      | any(opt_values($a; "--save-partlabel")[] | split(",")[]; . == $part) as $present
      | {changed: ($present | not),
         value: (if $present then $a else $a + ["--save-partlabel", $part] end),
         partindex: opt_values($a; "--save-partindex")}
    end;
JQ

# jqmerge OUT ARGS...: runs jq with the merge definitions; on failure prints only the merge's
# own message.
jqmerge() {
    local out=$1 msg
    shift
    if ! jq -c "$@" > "${out}" 2> "${WORK}/jq.err"; then
        msg=$(sed -n 's/^jq: error ([^)]*): merge: //p' "${WORK}/jq.err" | head -n 1)
        [ -n "${msg}" ] || msg="cannot merge: jq failed on the answer of the service"
        die "${msg}"
    fi
}

# The infra-env's discovery override.
call GET "${API}" "${WORK}/infra-env.json"

# The payload's cluster manifests, into the cluster the infra-env is bound to: what to send is
# decided (and a manifest of someone else's with our name refused) before anything is sent.
SEND=()
if [ "${#MANIFESTS[@]}" -gt 0 ]; then
    CLUSTER=$(jq -r '.cluster_id // "" | strings' "${WORK}/infra-env.json")
    if ! [[ ${CLUSTER} =~ ${ID_RE} ]]; then
        say "the infra-env is bound to no cluster: upload ${MANIFESTS[*]} to its cluster (folder openshift) once it is, or run this again then; without them the install-stage loader copies the images instead"
    else
        CAPI=${URL}/api/assisted-install/v2/clusters/${CLUSTER}/manifests
        call GET "${CAPI}" "${WORK}/manifests.json"
        for m in "${MANIFESTS[@]}"; do
            if jq -e --arg f "${m}" 'any(.[]?; .folder == "openshift" and .file_name == $f)' \
                "${WORK}/manifests.json" >/dev/null; then
                call GET "${CAPI}/files?folder=openshift&file_name=${m}" "${WORK}/have.${m}"
                if cmp -s -- "${WORK}/have.${m}" "${DIR}/${m}"; then
                    say "the cluster already holds ${m}; unchanged"
                    continue
                fi
                [ "$(head -c 11 -- "${WORK}/have.${m}")" = "# prestage," ] ||
                    die "the cluster's manifest openshift/${m} is not one prestage wrote: rename or remove yours"
                SEND+=("PATCH ${m}")
            else
                SEND+=("POST ${m}")
            fi
        done
    fi
fi
jqmerge "${WORK}/discovery.merged" --slurpfile ours "${DIR}/discovery.ign" \
    "${MERGE_JQ} (.ignition_config_override // \"\") | merge_ign(\$ours[0]; \"the infra-env's ignition_config_override\")" \
    "${WORK}/infra-env.json"
if [ "$(jq -r '.changed' "${WORK}/discovery.merged")" = true ]; then
    jq -c '{ignition_config_override: (.value | tojson)}' "${WORK}/discovery.merged" > "${WORK}/discovery.body"
    call PATCH "${API}" "${WORK}/answer" "${WORK}/discovery.body"
else
    say "the infra-env's ignition_config_override already holds prestage's loader and unit; unchanged"
fi
if [ "${#SEND[@]}" -gt 0 ]; then
    for item in "${SEND[@]}"; do
        method=${item%% *}
        m=${item#* }
        if [ "${method}" = POST ]; then
            jq -n --arg f "${m}" --rawfile c "${DIR}/${m}" \
                '{folder: "openshift", file_name: $f, content: ($c | @base64)}' > "${WORK}/manifest.body"
        else
            jq -n --arg f "${m}" --rawfile c "${DIR}/${m}" \
                '{folder: "openshift", file_name: $f, updated_content: ($c | @base64)}' > "${WORK}/manifest.body"
        fi
        call "${method}" "${CAPI}" "${WORK}/answer" "${WORK}/manifest.body"
    done
fi

if [ -n "${HOST}" ]; then
    call GET "${API}/hosts/${HOST}" "${WORK}/host.json"
    jqmerge "${WORK}/install.merged" --slurpfile ours "${DIR}/install.ign" \
        "${MERGE_JQ} (.ignition_config_overrides // \"\") | merge_ign(\$ours[0]; \"the host's ignition_config_overrides\")" \
        "${WORK}/host.json"
    jqmerge "${WORK}/args.merged" --arg part "${LABEL}" \
        "${MERGE_JQ} (.installer_args // \"\") | merge_args(\$part; \"the host's installer_args\")" \
        "${WORK}/host.json"
    if [ "$(jq -r '.changed' "${WORK}/install.merged")" = true ]; then
        jq -c '{config: (.value | tojson)}' "${WORK}/install.merged" > "${WORK}/install.body"
        call PATCH "${API}/hosts/${HOST}/ignition" "${WORK}/answer" "${WORK}/install.body"
    else
        say "the host's ignition override already holds prestage's loader and unit; unchanged"
    fi
    if [ "$(jq -r '.partindex | length' "${WORK}/args.merged")" != 0 ]; then
        say "the host's installer args also keep partitions by number (--save-partindex): kept; on the pre-staged disk they must keep no partition before the @LABEL@ partition, or coreos-installer refuses to install over it"
    fi
    if [ "$(jq -r '.changed' "${WORK}/args.merged")" = true ]; then
        jq -c '{args: .value}' "${WORK}/args.merged" > "${WORK}/args.body"
        call PATCH "${API}/hosts/${HOST}/installer-args" "${WORK}/answer" "${WORK}/args.body"
    else
        say "the host's installer args already keep the @LABEL@ partition; unchanged"
    fi
fi
