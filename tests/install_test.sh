#!/bin/sh
# Install into a temporary prefix, then build a program outside the tree
# with only <modal.h> and pkg-config, against the shared and the static
# library, and run one function through modal_fn_local.
set -eu
build=${1:-build}
tmp=$(mktemp -d /tmp/modal-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# A build directory of its own: the prefix is compiled into the library.
# SAN= : the outside program is built without sanitizers.
make -s install PREFIX="$tmp/prefix" BUILD="$build/install-check" SAN= CFLAGS="-O2 -g" >/dev/null
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
cat > "$tmp/outside.c" <<'PROG'
#include <modal.h>
#include <stdio.h>

MODAL_FUNCTION(triple, .timeout = 10)
{
    return modal_int(3 * modal_arg_int(args, 0));
}

MODAL_LOCAL_ENTRYPOINT(argc, argv)
{
    modal_value *out = NULL;
    modal_error err;
    if (modal_fn_local(&triple, modal_args(modal_int(14)), &out, &err) != MODAL_OK) {
        fprintf(stderr, "outside: %s\n", err.message);
        return 1;
    }
    int64_t v = 0;
    modal_get_int(out, &v, NULL);
    modal_value_free(out);
    printf("triple(14) = %lld with libmodal %s\n", (long long)v, modal_version());
    return v == 42 ? 0 : 1;
}
PROG
cc -Wall -Wextra -Werror -o "$tmp/outside" "$tmp/outside.c" $(pkg-config --cflags --libs modal)
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/outside"
cc -Wall -Wextra -Werror -static-libgcc -o "$tmp/outside-static" "$tmp/outside.c" \
    $(pkg-config --cflags modal) "$tmp/prefix/lib/libmodal.a" \
    $(pkg-config --libs --static modal | sed 's/-lmodal//')
"$tmp/outside-static"
# Only the public API is exported by the shared library.
bad=$(nm -D --defined-only "$tmp/prefix/lib/libmodal.so.0" | awk '{print $3}' | grep -v '^modal_' | grep -v '^modal__register$' | grep -v '^modal__set_app$' | grep -v '^MODAL_0$' || true)
if [ -n "$bad" ]; then
    echo "install test: unexpected exported symbols: $bad" >&2
    exit 1
fi
echo "install test: 1 passed, 0 failed"
