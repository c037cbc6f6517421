#!/bin/sh
# tests/layering.sh BUILD: check that the runtime's files depend on each
# other one way (runtime/rt.h draws the layers). Every object file of
# runtime/ is placed in a layer; no object may use a function or variable
# that an object of a higher layer defines. A lower layer that must say
# something to a higher one does it through callbacks it was given
# (rt_worker_events, rt_sched_listener), which no symbol table shows.
#
# An object not placed below fails the check: place a new file in its
# layer here.
set -u
export LC_ALL=C
build=${1:-build}
obj=$build/obj/runtime

layer_of() {
    case $1 in
    state | artifacts | tls | http_parse | queue | resources | launch | specs | gpus) echo 0 ;;
    worker | template) echo 1 ;;
    sched) echo 2 ;;
    httpd) echo 3 ;;
    http | http_calls | http_maps | http_artifacts | http_apps | http_status | http_functions) echo 4 ;;
    *) echo "" ;;
    esac
}

if ! ls "$obj"/*.o >/dev/null 2>&1; then
    echo "layering: no objects under $obj; build first (make)" >&2
    exit 1
fi
tmp=$(mktemp -d /tmp/modal-layering.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# name layer symbol, for every symbol an object defines
for o in "$obj"/*.o; do
    n=$(basename "$o" .o)
    l=$(layer_of "$n")
    [ -n "$l" ] || continue
    nm --defined-only -g "$o" | awk -v n="$n" -v l="$l" 'NF == 3 { print $3, n, l }'
done | sort > "$tmp/defs"

bad=0
for o in "$obj"/*.o; do
    n=$(basename "$o" .o)
    l=$(layer_of "$n")
    if [ -z "$l" ]; then
        echo "layering: $n.o is in no layer (add it to tests/layering.sh)"
        bad=1
        continue
    fi
    nm -u "$o" | awk '{ print $NF }' | sort -u > "$tmp/uses"
    # symbol definer layer, for the symbols this object uses
    join "$tmp/uses" "$tmp/defs" | while read -r sym def dl; do
        if [ "$dl" -gt "$l" ]; then
            echo "layering: $n.c (layer $l) uses $sym of $def.c (layer $dl)"
        fi
    done > "$tmp/bad-$n"
    if [ -s "$tmp/bad-$n" ]; then
        cat "$tmp/bad-$n"
        bad=1
    fi
done
if [ "$bad" != 0 ]; then
    echo "layering: a lower file calls up; pass it a callback instead (see runtime/rt.h)"
    exit 1
fi
echo "layering: the runtime's files depend on each other one way"
