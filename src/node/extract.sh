#!/bin/bash
# @PROG@: load the pre-staged @STAGE_NAME@ images from the partition labelled @LABEL@ into the
# default containers-storage, each under its exact source reference. Written by prestage for
# the `@FORMAT@` payload.
#
# Usage: @PROG@ [--label LABEL] [--jobs N] [--retries N]
#
# - finds the partition as /dev/disk/by-partlabel/LABEL (waiting up to 30 s for udev); reuses a
#   mount of it, else mounts it itself (@MOUNT_DOC@) on a directory it creates, and unmounts it
#   afterwards; a mount point it cannot unmount is left as it is, never removed;
# - reads @LIST@ and mapping.txt from the partition root; lines that are not image references
#   are reported and skipped, and no line is ever run or expanded by the shell;
# - skips an image already stored under its exact name with its digest (in the discovery stage
#   also under the tag mapping.txt gives it); a tag reference is skipped when that name exists
#   (for the `store` payload: also when the store is the storage's additional image store);
# - loads at most --jobs images at once (default: the CPU count, at least 1), retrying each
#   failed image itself up to --retries times, and checks the digest stored for each;
@STORE_DOC@# - ends with one summary line and exits 1 when an image failed to load or a list line was
#   refused (the others are still loaded), 2 when it cannot start (no partition, no mount, no
#   room to extract); it removes only the directories it created.

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

# The last two lines of an error output, on one line and at most 400 characters: skopeo prints
# informational lines first and the error last.
err_tail() {
    local t
    t=$(tail -n 2 -- "$1" 2>/dev/null | tr -s '\r\n\t' '   ')
    t=${t% }
    [ "${#t}" -le 400 ] || t=...${t: -400}
    printf '%s' "${t}"
}
die() { log "FAIL: $*"; exit 2; }

usage() {
    printf 'Usage: %s [--label LABEL] [--jobs N] [--retries N]\n' "${PROG}" >&2
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
if [ -n "${JOBS}" ]; then
    [[ ${JOBS} =~ ^[0-9]{1,4}$ && ${JOBS} -ge 1 ]] || die "--jobs: $(printf '%q' "${JOBS}") is not a number from 1"
else
    JOBS=$(nproc 2>/dev/null)
    [[ ${JOBS} =~ ^[0-9]{1,4}$ && ${JOBS} -ge 1 ]] || JOBS=1
fi
[[ ${RETRIES} =~ ^[0-9]{1,3}$ && ${RETRIES} -ge 1 ]] || die "--retries: $(printf '%q' "${RETRIES}") is not a number from 1"

for tool in skopeo findmnt mount umount mktemp readlink sha256sum seq cut head tail tr cat @TOOLS@; do
    command -v "${tool}" >/dev/null 2>&1 || die "${tool} is not installed"
done

DEV=/dev/disk/by-partlabel/${LABEL}
for _ in $(seq 30); do
    [ -b "${DEV}" ] && break
    sleep 1
done
[ -b "${DEV}" ] || die "${DEV}: no such partition"
REAL_DEV=$(readlink -f -- "${DEV}") || die "${DEV}: cannot resolve"

# Everything this run creates lives under WORK (removed at exit), in SCRATCH (its own
# directory, removed at exit) or is its own mount point (removed with rmdir, which removes only
# an empty directory, and only after a successful umount).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/prestage-load.XXXXXX") || die "cannot create a work directory"
MNT=
MOUNTED=
SCRATCH=

cleanup() {
    local rc=$? pids pid
    trap - EXIT INT TERM HUP
    jobs -rp > "${WORK}/left" 2>/dev/null
    mapfile -t pids < "${WORK}/left"
    if [ "${#pids[@]}" -gt 0 ]; then
        # Each job's skopeo or tar first: a job killed alone would leave them running on the
        # mount and the scratch directory.
        for pid in "${pids[@]}"; do
            command -v pkill >/dev/null 2>&1 && pkill -TERM -P "${pid}" 2>/dev/null
        done
        kill -TERM "${pids[@]}" 2>/dev/null
        wait
    fi
    cd / || true
    if [ -n "${SCRATCH}" ] && [ -d "${SCRATCH}" ]; then
        rm -rf -- "${SCRATCH}"
    fi
    if [ -n "${MOUNTED}" ]; then
        if umount -- "${MNT}"; then
            rmdir -- "${MNT}" 2>/dev/null || log "left ${MNT} in place: not empty"
        else
            log "could not unmount ${MNT}; it is left mounted, nothing on it was removed"
        fi
    fi
    # Never remove through a mount: one the storage library left in this run's throwaway store
    # is unmounted first, and the work directory is kept when that fails.
    local m kept=
    while IFS= read -r m; do
        m=$(printf '%b' "${m}")
        if [[ ${m} == "${WORK}/"* ]] && ! umount -- "${m}" 2>/dev/null; then
            kept=${m}
        fi
    done < <(findmnt -rn -o TARGET 2>/dev/null)
    if [ -n "${kept}" ]; then
        log "left ${WORK} in place: ${kept} is still mounted"
    else
        rm -rf -- "${WORK}"
    fi
    exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The partition: a mount of it that exists, or our own.
MNT=$(findmnt -rn -o TARGET -S "${REAL_DEV}" 2>/dev/null | head -n 1)
MNT=$(printf '%b' "${MNT}")
if [ -z "${MNT}" ]; then
    MNT=$(mktemp -d "${TMPDIR:-/tmp}/prestage-data.XXXXXX") || die "cannot create a mount point"
    # nouuid: a second disk flashed from the same image must not make the mount fail.
    MOUNT_OPTIONS=(@MOUNT_OPTIONS@)
    for opts in "${MOUNT_OPTIONS[@]}"; do
        if mount -t xfs -o "${opts}" -- "${REAL_DEV}" "${MNT}" 2>"${WORK}/mount.err"; then
            MOUNTED=1
            break
        fi
    done
    if [ -z "${MOUNTED}" ]; then
        rmdir -- "${MNT}"
        die "cannot mount ${DEV}: $(head -c 300 "${WORK}/mount.err")"
    fi
fi
cd -- "${MNT}" || die "cannot enter ${MNT}"
for f in "${LIST}" mapping.txt; do
    [ -f "${f}" ] || die "${MNT}/${f}: not found (is this a prestage partition?)"
done
@FORMAT_SETUP@
# Image references as the lists hold them: HOST[:PORT]/PATH@sha256:HEX, or HOST[:PORT]/PATH:TAG.
REF_RE='^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-]+[a-z0-9]+)*)+(@sha256:[a-f0-9]{64}|:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$'
TAG_RE='^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'

# The tag mapping.txt gives a reference (`SRC=DEST:TAG`), compared as plain strings.
tag_of() {
    local ref=$1 line
    while IFS= read -r line || [ -n "${line}" ]; do
        line=${line%$'\r'}
        if [[ ${line} == "${ref}="* ]]; then
            line=${line##*:}
            [[ ${line} =~ ${TAG_RE} ]] && printf '%s' "${line}"
            return 0
        fi
    done < mapping.txt
}

# The digest of the manifest stored under a name, or nothing.
stored_digest() {
    local raw
    raw=$(skopeo inspect --raw "containers-storage:$1" 2>/dev/null) || return 0
    printf '%s' "${raw}" | sha256sum | cut -d' ' -f1
}

# The digest of the image config stored under a name, or nothing: a tag stored from a manifest
# list names the platform's image, whose manifest is not the list but whose config is the same.
stored_config() {
    local raw
    raw=$(skopeo inspect --raw --config "containers-storage:$1" 2>/dev/null) || return 0
    printf '%s' "${raw}" | sha256sum | cut -d' ' -f1
}

# Whether an image is stored under all its names: a digest reference with that digest (and in
# the discovery stage its tag naming the same image), a tag reference under that name.
present() {
    local ref=$1 tag=$2 config
    if [[ ${ref} == *@sha256:* ]]; then
        [ "$(stored_digest "${ref}")" = "${ref##*@sha256:}" ] || return 1
        [ -n "${tag}" ] || return 0
        config=$(stored_config "${ref}")
        [ -n "${config}" ] && [ "$(stored_config "${ref%@*}:${tag}")" = "${config}" ]
    else
        skopeo inspect --raw "containers-storage:${ref}" >/dev/null 2>&1
    fi
}

# Copies the image's source (per format) to one destination.
copy_to() {
    local src=$1 dest=$2
    case "${FORMAT}" in
        shared) skopeo copy -q --src-shared-blob-dir "${MNT}/blobs" "oci:${src}" "containers-storage:${dest}" ;;
        ztp) skopeo copy -q "dir:${src}" "containers-storage:${dest}" ;;
        store) store_copy "${dest}" "${src}" ;;
    esac
}

# `store`: an image cannot be copied out of a containers-storage under its digest in one step
# (a storage source hands its layers over uncompressed, which changes the manifest), so, with
# DIR, a directory of this run:
# 1. the image, named by its ID (its config's digest) only, into the default storage: its layers
#    and config are copied, under no name;
# 2. its manifests (a list's and the instance's) and config, as a dir: layout in DIR, under the
#    exact name into the default storage opened with the partition's store as an additional
#    image store: each layer is found there by its compressed digest, and the copy step 1 made
#    (same layer ID, in the default storage, which is searched first) is the one the image uses.
store_copy() {
    local ref=$1 dir=$2 id top inst
    mkdir -p -- "${dir}" || return 1
    if ! skopeo inspect --raw --config "${SRC_STORE}${ref}" > "${dir}/config"; then
        printf 'not in the store on the partition under this name, or unreadable there\n' >&2
        return 1
    fi
    id=$(sha256sum < "${dir}/config" | cut -d' ' -f1)
    mv -f -- "${dir}/config" "${dir}/${id}" || return 1
    skopeo inspect --raw "${SRC_STORE}${ref}" > "${dir}/manifest.json" || return 1
    skopeo inspect --raw "${SRC_STORE}@${id}" > "${dir}/instance" || return 1
    top=$(sha256sum < "${dir}/manifest.json" | cut -d' ' -f1)
    inst=$(sha256sum < "${dir}/instance" | cut -d' ' -f1)
    if [ "${inst}" != "${top}" ]; then
        mv -f -- "${dir}/instance" "${dir}/${inst}.manifest.json" || return 1
    fi
    printf 'Directory Transport Version: 1.1\n' > "${dir}/version" || return 1
    skopeo copy -q "${SRC_STORE}@${id}" "containers-storage:@${id}" || return 1
    skopeo copy -q --preserve-digests "dir:${dir}" "${DEST_STORE}${ref}"
}

# Loads one image, retrying it; writes loaded|skipped|failed into its status file.
load_one() {
    local ref=$1 status=$2 name want got src tag attempt err t0=${SECONDS}
    name=${ref##*/}
    name=${name/:/_}
    want=
    [[ ${ref} == *@sha256:* ]] && want=${ref##*@sha256:}
    tag=
    [ "${STAGE}" = ai ] && tag=$(tag_of "${ref}")
    if present "${ref}" "${tag}"; then
        echo skipped > "${status}"
        return 0
    fi
    err=${WORK}/err.${status##*/}
    for ((attempt = 1; attempt <= RETRIES; attempt++)); do
        [ "${attempt}" -gt 1 ] && sleep "$((attempt - 1))"
        case "${FORMAT}" in
            shared) src=${TREE}/${name} ;;
            ztp)
                src=${SCRATCH}/${name}
                rm -rf -- "${src}"
                if ! tar -xzf "${MNT}/${name}.tgz" -C "${SCRATCH}" --no-same-owner 2>"${err}"; then
                    log "${ref}: cannot extract ${name}.tgz (attempt ${attempt}): $(head -c 300 "${err}")"
                    continue
                fi
                ;;
            store) src=${WORK}/image.${status##*/} ;;
        esac
        if ! copy_to "${src}" "${ref}" 2>"${err}"; then
            log "${ref}: copy failed (attempt ${attempt}): $(err_tail "${err}")"
            continue
        fi
        got=$(stored_digest "${ref}")
        if [ -n "${want}" ] && [ "${got}" != "${want}" ]; then
            log "${ref}: stored with digest sha256:${got:-none}, not sha256:${want} (attempt ${attempt})"
            continue
        fi
        if [ -n "${tag}" ] && ! copy_to "${src}" "${ref%@*}:${tag}" 2>"${err}"; then
            log "${ref}: cannot store the tag ${tag} (attempt ${attempt}): $(err_tail "${err}")"
            continue
        fi
        [ "${FORMAT}" = ztp ] && rm -rf -- "${src}"
        log "loaded ${ref} in $((SECONDS - t0)) s"
        echo loaded > "${status}"
        return 0
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
        log "${LIST}:$((i + 1)): not an image reference, refused: $(printf '%q' "${line}")"
        BAD=$((BAD + 1))
        continue
    fi
    [ -n "${SEEN[${line}]:-}" ] && continue
    SEEN[${line}]=1
    REFS+=("${line}")
done

TOTAL=${#REFS[@]}
log "${TOTAL} images to load from ${DEV} (${FORMAT} payload), ${JOBS} at a time"
for i in "${!REFS[@]}"; do
    # Block (never poll) while the pool is full: `wait -n` returns when one job ends.
    while :; do
        jobs -rp > "${WORK}/running"
        mapfile -t running < "${WORK}/running"
        [ "${#running[@]}" -lt "${JOBS}" ] && break
        wait -n
    done
    echo failed > "${WORK}/status.${i}"
    load_one "${REFS[$i]}" "${WORK}/status.${i}" &
done
wait

LOADED=0
SKIPPED=0
FAILED=0
for i in "${!REFS[@]}"; do
    case "$(cat "${WORK}/status.${i}")" in
        loaded) LOADED=$((LOADED + 1)) ;;
        skipped) SKIPPED=$((SKIPPED + 1)) ;;
        *) FAILED=$((FAILED + 1)); log "not loaded: ${REFS[$i]}" ;;
    esac
done
log "summary: ${LOADED} loaded, ${SKIPPED} skipped, ${FAILED} failed of ${TOTAL} images, ${BAD} list lines refused, in $((SECONDS - START)) s"
[ "${FAILED}" -eq 0 ] && [ "${BAD}" -eq 0 ]
