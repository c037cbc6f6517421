#!/bin/sh
# Run each test binary in its own process with a time limit, then print one
# summary line "N passed, N failed". Arguments: build dir, then binaries.
build=$1; shift
limit=${MODAL_TEST_TIMEOUT:-600}
passed=0; failed=0; failures=""
for t in "$@"; do
    echo "==> $t"
    # Unquoted: an entry may be a command with arguments.
    if timeout --kill-after=10 "$limit" $t; then
        passed=$((passed + 1))
    else
        rc=$?
        failed=$((failed + 1)); failures="$failures $t(rc=$rc)"
    fi
done
[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
