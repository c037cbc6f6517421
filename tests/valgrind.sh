#!/bin/sh
# Run the unit tests under valgrind's memcheck; any error or leak fails.
passed=0; failed=0
for t in "$@"; do
    echo "==> valgrind $t"
    if valgrind --quiet --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect --track-fds=no "$t" >/dev/null; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1)); echo "valgrind: $t failed"
    fi
done
echo "valgrind: $passed passed, $failed failed"
[ "$failed" = 0 ]
