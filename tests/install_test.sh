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
# The runtime finds its kernel worker next to itself (docs/gpu.md).
for b in modal-runtime modal-kernel-worker; do
    [ -x "$tmp/prefix/bin/$b" ] || { echo "install test: $b was not installed" >&2; exit 1; }
done
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
# The GPU make rules are installed. With nvcc, a program outside the tree
# builds its kernel into itself with them, as docs/gpu.md says, and runs it
# on the CUDA test double.
test -f "$tmp/prefix/share/modal/gpu.mk"
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
# The test double and its kernels, built like the outside program: without
# sanitizers (a sanitized one cannot be loaded into it).
fake="$(pwd)/$build/install-check/tests/cuda_fake"
make -s BUILD="$build/install-check" SAN= CFLAGS="-O2 -g" \
    "$build/install-check/tests/cuda_fake/libcuda.so.1" \
    "$build/install-check/tests/cuda_fake/libfake_kernels.so" >/dev/null
if [ -n "$nvcc" ] && [ -f "$fake/libcuda.so.1" ] && [ -f "$fake/libfake_kernels.so" ]; then
    mkdir "$tmp/gpu"
    cp examples/kernels/saxpy.cu "$tmp/gpu/"
    cat > "$tmp/gpu/app.c" <<'PROG'
#include <modal.h>
#include <stdio.h>

MODAL_GPU_IMAGE(saxpy);

int main(void)
{
    float x[1000], y[1000], a = 3;
    int n = 1000;
    for (int i = 0; i < n; i++)
        x[i] = (float)i, y[i] = 1;
    modal_gpu_arg args[] = {MODAL_GPU_SCALAR(n), MODAL_GPU_SCALAR(a), MODAL_GPU_IN(x, n),
                            MODAL_GPU_INOUT(y, n)};
    modal_gpu_launch l = {.image = &saxpy_gpu_image, .kernel = "saxpy", .grid = MODAL_DIM3(4),
                          .block = MODAL_DIM3(256), .args = args, .nargs = 4};
    modal_error err;
    if (modal_gpu_run(&l, NULL, &err) != MODAL_OK) {
        fprintf(stderr, "app: %s\n", err.message);
        return 1;
    }
    for (int i = 0; i < n; i++)
        if (y[i] != 3.0f * i + 1)
            return 1;
    printf("saxpy from an embedded fatbin: ok\n");
    return 0;
}
PROG
    printf '%s\n' 'include $(shell pkg-config --variable=prefix modal)/share/modal/gpu.mk' \
        'MODAL_NVCCFLAGS = -O3 --no-compress' \
        'app: app.c saxpy.fatbin.o' \
        '	$(CC) -o $@ app.c saxpy.fatbin.o $(shell pkg-config --cflags --libs modal)' \
        > "$tmp/gpu/Makefile"
    make -s -C "$tmp/gpu" NVCC="$nvcc" CC=cc app >/dev/null
    MODAL_CUDA_LIBRARY="$fake/libcuda.so.1" MODAL_FAKE_CUDA_KERNELS="$fake/libfake_kernels.so" \
    MODAL_FAKE_CUDA_DEVICES='NVIDIA H100 80GB HBM3|81559|9.0|GPU-11111111-2222-3333-4444-000000000001' \
    LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/gpu/app"
else
    echo "install test: no nvcc or no CUDA test double built: the GPU recipe was not tried"
fi
echo "install test: 1 passed, 0 failed"
