#!/bin/sh
# `make` (the library, the runtime, pkg-config file) needs only the build
# packages; cmocka, valgrind, clang and Dask are needed only by the targets
# that use them. Checked by hiding those packages from tools/deps.sh (a
# dpkg-query that reports them missing, and a non-root id so nothing is
# installed), then building: `make` must succeed, a test binary must not.
# Run from `make test`; make's own variables (BUILD, SAN, CFLAGS) reach the
# inner make through MAKEFLAGS, so it finds everything already built.
set -u
tmp=$(mktemp -d /tmp/modal-deps.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
real=$(command -v dpkg-query) || { echo "deps_test: no dpkg-query here, nothing to check"; exit 0; }
cat > "$tmp/dpkg-query" <<EOS
#!/bin/sh
for a in "\$@"; do
    case "\$a" in
    libcmocka-dev|valgrind|clang|python3-distributed|python3-numpy)
        echo "deinstall ok config-files"; exit 0 ;;
    esac
done
exec $real "\$@"
EOS
printf '#!/bin/sh\necho 1000\n' > "$tmp/id"
chmod +x "$tmp/dpkg-query" "$tmp/id"

if ! PATH="$tmp:$PATH" make -s all >"$tmp/all.out" 2>&1; then
    echo "deps_test: \`make\` failed without cmocka, valgrind and clang:" >&2
    cat "$tmp/all.out" >&2
    exit 1
fi
build=${1:-build}
if PATH="$tmp:$PATH" make -s "$build/tests/test_null" >"$tmp/test.out" 2>&1; then
    echo "deps_test: a test binary was made without cmocka being checked" >&2
    exit 1
fi
if ! grep -q "apt-get install libcmocka-dev" "$tmp/test.out"; then
    echo "deps_test: a missing cmocka was not named:" >&2
    cat "$tmp/test.out" >&2
    exit 1
fi
echo "deps_test: make needs only the build packages; tests name cmocka when it is missing"
