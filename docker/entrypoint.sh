#!/bin/sh
# The container's entrypoint: seed an empty model store from the model baked into the image,
# then exec the command (lstm-serve by default), so the server replaces this shell and gets
# SIGTERM directly.
#
#   IMAGE                        -> lstm-serve
#   IMAGE --workers 2            -> lstm-serve --workers 2      (arguments starting with "-")
#   IMAGE lstm-train --preset tutorial                          (any other command, as given)
#
# Seeding: the baked store ($LSTM_BAKED_STORE, set in the Dockerfile; empty turns seeding off)
# is copied into a folder $LSTM_STORE_DIR (a path or file://; never an s3:// store) only when the store has no published version at all, so a
# store that holds models (or whose versions were all deleted on purpose) is never touched.
# Each model is copied to a staging folder inside the store and renamed into place; the rename
# fails if the model's folder is already there, so replicas that start together on one shared
# volume seed it once, and a reader never sees half a model.
set -eu

log() {
    echo "entrypoint: $*" >&2
}

has_versions() {
    # A published version is STORE/NAME/versions/N/manifest.json (see docs/store.md).
    for manifest in "$1"/*/versions/[1-9]*/manifest.json; do
        [ -f "$manifest" ] && return 0
    done
    return 1
}

seed_store() {
    baked=$1
    store=$2
    if ! has_versions "$baked"; then
        log "no baked model in $baked; nothing to seed"
        return 0
    fi
    if has_versions "$store"; then
        return 0
    fi
    if ! mkdir -p "$store" 2>/dev/null || [ ! -w "$store" ]; then
        log "cannot write to the store $store (it must be writable by uid $(id -u)); not seeding it"
        return 0
    fi
    staging=$(mktemp -d "$store/.seed-XXXXXX")
    trap 'rm -rf "$staging"' EXIT
    cp -R "$baked"/. "$staging"/
    for model_dir in "$staging"/*/; do
        name=$(basename "$model_dir")
        # mv -T renames the folder itself; it fails, leaving the other one alone, if the
        # store already has a non-empty folder of that name.
        if mv -T "$staging/$name" "$store/$name" 2>/dev/null; then
            log "seeded $store/$name from $baked"
        else
            log "kept the existing $store/$name"
        fi
    done
    rm -rf "$staging"
    trap - EXIT
}

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- lstm-serve "$@"
fi

if [ "${LSTM_API_TOKEN+set}" = set ] && [ -z "$LSTM_API_TOKEN" ]; then
    log "error: LSTM_API_TOKEN is set but empty; lstm-serve refuses to start. Unset it or set a secret"
fi

store=${LSTM_STORE_DIR:-model-store}
case $store in
    file://*) store=${store#file://} ;;
    *://*)
        # An object store (s3://) shared by every replica: seeding it from each pod would race to
        # publish copies; seed it once instead (docs/scale-out.md, compose.scale.yaml's seed step).
        store= ;;
esac

if [ "$1" = "lstm-serve" ] && [ -n "${LSTM_BAKED_STORE:-}" ] && [ -n "$store" ]; then
    seed_store "$LSTM_BAKED_STORE" "$store"
fi

exec "$@"
