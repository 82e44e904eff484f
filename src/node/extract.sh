#!/bin/bash
# @PROG@: load the pre-staged @STAGE_NAME@ images from the partition labelled @LABEL@ into the
# default containers-storage, each under its exact source reference. Written by prestage for
# the `@FORMAT@` payload.
#
# Usage: @PROG@ [--label LABEL] [--jobs N] [--retries N]
#
# - finds the partition as /dev/disk/by-partlabel/LABEL; reuses a mount of it, else mounts it
#   itself (@MOUNT_DOC@) on a directory it creates, and unmounts it afterwards;
# - reads @LIST@ and mapping.txt from the partition root; lines that are not image references
#   are reported and skipped, and no line is ever run or expanded by the shell;
# - skips images already stored under their exact name (their manifest digest checked);
# - loads with at most --jobs images at once (default: the CPU count), retrying each failed
#   image itself up to --retries times, and checks the stored digest of each;
# - ends with one summary line and exits non-zero when an image failed to load (the others
#   are still loaded); it removes only the directories it created.

set -u -o pipefail
shopt -s nullglob

PROG=@PROG@
STAGE=@STAGE@
FORMAT=@FORMAT@
LABEL=@LABEL@
LIST=@LIST@
TREE=@TREE@
JOBS=
RETRIES=3
START=${SECONDS}

log() { printf '%s: %s\n' "${PROG}" "$*" >&2; }
die() { log "FAIL: $*"; exit 2; }

usage() {
    printf 'Usage: %s [--label LABEL] [--jobs N] [--retries N]\n' "${PROG}"
    exit "${1:-2}"
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --label) [ "$#" -ge 2 ] || usage; LABEL=$2; shift 2 ;;
        --label=*) LABEL=${1#--label=}; shift ;;
        --jobs) [ "$#" -ge 2 ] || usage; JOBS=$2; shift 2 ;;
        --jobs=*) JOBS=${1#--jobs=}; shift ;;
        --retries) [ "$#" -ge 2 ] || usage; RETRIES=$2; shift 2 ;;
        --retries=*) RETRIES=${1#--retries=}; shift ;;
        -h|--help) usage 0 ;;
        *) log "unknown argument: $(printf '%q' "$1")"; usage ;;
    esac
done

[[ ${LABEL} =~ ^[A-Za-z0-9._-]{1,36}$ ]] || die "--label: $(printf '%q' "${LABEL}") is not a partition label ([A-Za-z0-9._-], at most 36)"
if [ -z "${JOBS}" ]; then
    JOBS=$(nproc 2>/dev/null || echo 1)
fi
[[ ${JOBS} =~ ^[0-9]+$ ]] || die "--jobs: $(printf '%q' "${JOBS}") is not a number"
[ "${JOBS}" -ge 1 ] || JOBS=1
[[ ${RETRIES} =~ ^[0-9]+$ && ${RETRIES} -ge 1 ]] || die "--retries: must be a number of at least 1"

for tool in skopeo findmnt mount umount mktemp sha256sum; do
    command -v "${tool}" >/dev/null 2>&1 || die "${tool} is not installed"
done

DEV=/dev/disk/by-partlabel/${LABEL}
[ -b "${DEV}" ] || die "${DEV}: no such partition"

# Everything this run creates lives under WORK (removed at exit) or is its own mount point
# (removed with rmdir, which only removes an empty directory, after a successful umount).
WORK=$(mktemp -d /tmp/prestage-load.XXXXXX) || die "cannot create a work directory"
MNT=
MOUNTED=
SCRATCH=

cleanup() {
    local rc=$?
    cd / || true
    if [ -n "${SCRATCH}" ] && [ -d "${SCRATCH}" ]; then
        rm -rf -- "${SCRATCH}"
    fi
    if [ -n "${MOUNTED}" ]; then
        if umount -- "${MNT}"; then
            rmdir -- "${MNT}" 2>/dev/null || log "left ${MNT} in place: not empty"
        else
            log "could not unmount ${MNT}; it is left mounted"
        fi
    fi
    rm -rf -- "${WORK}"
    exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# The partition: a mount of it that exists, or our own.
MNT=$(findmnt -rn -o TARGET -S "${DEV}" 2>/dev/null | head -n 1)
MNT=$(printf '%b' "${MNT}")
if [ -z "${MNT}" ]; then
    MNT=$(mktemp -d /tmp/prestage-data.XXXXXX) || die "cannot create a mount point"
    MOUNTED=1
    if ! mount -o "@MOUNT_MODE@" -- "${DEV}" "${MNT}"; then
        MOUNTED=
        rmdir -- "${MNT}"
        die "cannot mount ${DEV}"
    fi
fi
cd -- "${MNT}" || die "cannot enter ${MNT}"
for f in "${LIST}" mapping.txt; do
    [ -f "${f}" ] || die "${MNT}/${f}: not found (is this a prestage partition?)"
done
@ZTP_SCRATCH@
# Image references as the lists hold them: HOST[:PORT]/PATH@sha256:HEX, or HOST[:PORT]/PATH:TAG.
REF_RE='^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-]+[a-z0-9]+)*)+(@sha256:[a-f0-9]{64}|:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$'
TAG_RE='^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'

# The tag mapping.txt gives a reference (`SRC=DEST:TAG`), compared as plain strings.
tag_of() {
    local ref=$1 line
    while IFS= read -r line || [ -n "${line}" ]; do
        if [[ ${line} == "${ref}="* ]]; then
            line=${line##*:}
            [[ ${line} =~ ${TAG_RE} ]] && printf '%s' "${line}"
            return 0
        fi
    done < mapping.txt
}

# The digest stored under a reference, or nothing.
stored_digest() {
    local raw
    raw=$(skopeo inspect --raw "containers-storage:$1" 2>/dev/null) || return 0
    printf '%s' "${raw}" | sha256sum | cut -d' ' -f1
}

# Copies the image's source (per format) to one destination.
copy_to() {
    local src=$1 dest=$2
    case "${FORMAT}" in
        shared) skopeo copy -q --src-shared-blob-dir "${MNT}/blobs" "oci:${src}" "containers-storage:${dest}" ;;
        ztp) skopeo copy -q "dir:${src}" "containers-storage:${dest}" ;;
    esac
}

# Loads one image, retrying it; writes loaded|failed into the status file.
load_one() {
    local ref=$1 status=$2 name want got src tag attempt err
    name=${ref##*/}
    name=${name/:/_}
    want=
    [[ ${ref} == *@sha256:* ]] && want=${ref##*@sha256:}
    err=${WORK}/err.${status##*/}
    for ((attempt = 1; attempt <= RETRIES; attempt++)); do
        case "${FORMAT}" in
            shared) src=${TREE}/${name} ;;
            ztp)
                src=${SCRATCH}/${name}
                rm -rf -- "${src}"
                if ! tar -xzf "${MNT}/${name}.tgz" -C "${SCRATCH}" 2>"${err}"; then
                    log "${ref}: cannot extract ${name}.tgz (attempt ${attempt}): $(head -c 300 "${err}")"
                    continue
                fi
                ;;
        esac
        if copy_to "${src}" "${ref}" 2>"${err}"; then
            got=$(stored_digest "${ref}")
            if [ -n "${want}" ] && [ "${got}" != "${want}" ]; then
                log "${ref}: stored with digest sha256:${got:-none}, not sha256:${want} (attempt ${attempt})"
                continue
            fi
            tag=
            [ "${STAGE}" = ai ] && tag=$(tag_of "${ref}")
            if [ -n "${tag}" ]; then
                if ! copy_to "${src}" "${ref%@*}:${tag}" 2>"${err}"; then
                    log "${ref}: cannot store the tag ${tag} (attempt ${attempt}): $(head -c 300 "${err}")"
                    continue
                fi
            fi
            [ "${FORMAT}" = ztp ] && rm -rf -- "${src}"
            echo loaded > "${status}"
            return 0
        fi
        log "${ref}: copy failed (attempt ${attempt}): $(head -c 300 "${err}")"
        [ "${attempt}" -lt "${RETRIES}" ] && sleep "${attempt}"
    done
    [ "${FORMAT}" = ztp ] && rm -rf -- "${SCRATCH:?}/${name}"
    echo failed > "${status}"
    return 1
}

mapfile -t LINES < "${LIST}"
declare -A SEEN=()
REFS=()
BAD=0
for i in "${!LINES[@]}"; do
    line=${LINES[$i]%$'\r'}
    [[ -z ${line} || ${line} == \#* ]] && continue
    if ! [[ ${line} =~ ${REF_RE} ]]; then
        log "${LIST}:$((i + 1)): not an image reference, skipped: $(printf '%q' "${line}")"
        BAD=$((BAD + 1))
        continue
    fi
    [ -n "${SEEN[${line}]:-}" ] && continue
    SEEN[${line}]=1
    REFS+=("${line}")
done

TOTAL=${#REFS[@]}
log "loading ${TOTAL} images from ${DEV} (${FORMAT} payload), ${JOBS} at a time"
SKIPPED=0
for i in "${!REFS[@]}"; do
    ref=${REFS[$i]}
    want=
    [[ ${ref} == *@sha256:* ]] && want=${ref##*@sha256:}
    if [ -n "${want}" ] && [ "$(stored_digest "${ref}")" = "${want}" ]; then
        SKIPPED=$((SKIPPED + 1))
        continue
    fi
    # Block (never poll) while the pool is full.
    while [ "$(jobs -rp | wc -l)" -ge "${JOBS}" ]; do
        wait -n
    done
    echo failed > "${WORK}/status.${i}"
    load_one "${ref}" "${WORK}/status.${i}" &
done
wait

LOADED=0
FAILED=0
for i in "${!REFS[@]}"; do
    [ -f "${WORK}/status.${i}" ] || continue
    case "$(cat "${WORK}/status.${i}")" in
        loaded) LOADED=$((LOADED + 1)) ;;
        *) FAILED=$((FAILED + 1)); log "not loaded: ${REFS[$i]}" ;;
    esac
done
log "${LOADED} loaded, ${SKIPPED} skipped, ${FAILED} failed of ${TOTAL} images, ${BAD} list lines refused, in $((SECONDS - START)) s"
[ "${FAILED}" -eq 0 ] && [ "${BAD}" -eq 0 ]
