#!/bin/sh
# Run libFuzzer targets for a while each, starting from their seed corpus.
#
#   tests/fuzz/run.sh SECONDS BIN...
#
# Target fuzz_NAME uses tests/fuzz/corpus/NAME/ as its seeds. The fuzzer
# works on a temporary copy, so new inputs never pollute the repository;
# crash, leak and timeout reproducers are written next to this script as
# tests/fuzz/crash-* and the like (git ignores them). Exits non-zero if any
# target failed.
set -u
if [ $# -lt 2 ]; then
    echo "usage: $0 SECONDS BIN..." >&2
    exit 2
fi
seconds=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
# UBSan only reports and continues unless told to stop; a finding must fail.
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export UBSAN_OPTIONS
failed=0
for bin in "$@"; do
    base=$(basename "$bin")
    name=${base#fuzz_}
    seeds=$here/corpus/$name
    work=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-$name.XXXXXX") || exit 1
    if [ -d "$seeds" ]; then
        cp -R "$seeds/." "$work/"
    else
        echo "run.sh: no seed corpus $seeds; starting empty" >&2
    fi
    echo "==> $base for ${seconds}s (corpus copy in $work)"
    if "$bin" "$work" -max_total_time="$seconds" -max_len=65536 \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$here/"; then
        echo "==> $base: no failure"
    else
        echo "==> $base: FAILED (rc=$?); see tests/fuzz/crash-* (or leak-*, timeout-*)" >&2
        failed=1
    fi
    rm -rf "$work"
done
exit $failed
