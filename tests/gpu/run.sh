#!/bin/sh
# tests/gpu/run.sh [--fake]: check libmodal on a machine with one NVIDIA
# GPU (H100 or H200), in one go and in a few minutes (docs/gpu.md,
# "Checking on a real GPU").
#
# It runs from the bundle `make gpu-bundle` builds (build/gpu-bundle/: this
# script, bin/, examples/, lib/ with the shared libraries a stock Ubuntu
# 24.04 lacks), or from a source tree after `make` (build/). Nothing is
# built here: the GPU machine needs no compiler, cJSON, libmicrohttpd or
# cmocka. It starts a runtime on a free loopback port in a temporary state
# directory, runs every GPU example (each checks its results against a CPU
# reference on random inputs), then measures with gpu_bench, and prints a
# table with one line per check. Exit status 0 only when every check
# passed.
#
# --fake runs the same flow against the CUDA test double
# (tests/cuda_fake): that checks the script and the programs, not the GPU,
# and its numbers mean nothing; the timing targets are then not judged.
set -u
fake=0
for a in "$@"; do
    case $a in
    --fake) fake=1 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option \"$a\" (use --fake or nothing)" >&2; exit 2 ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
if [ -x "$here/bin/modal-runtime" ]; then
    bin=$here/bin ex=$here/examples fakedir=$here/fake bench=$here/bin/gpu_bench
    LD_LIBRARY_PATH=$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export LD_LIBRARY_PATH
else
    b=${BUILD:-$here/../../build}
    b=$(cd "$b" 2>/dev/null && pwd) || { echo "run.sh: no build directory $b; run make" >&2; exit 2; }
    bin=$b ex=$b/examples fakedir=$b/tests/cuda_fake bench=$b/bench/gpu_bench
fi
for f in "$bin/modal-runtime" "$bin/modal-kernel-worker" "$bench"; do
    if [ ! -x "$f" ]; then
        echo "run.sh: $f is missing: build it with make (the GPU programs need nvcc)" >&2
        exit 2
    fi
done

if [ "$fake" = 1 ]; then
    echo "=================================================================="
    echo "FAKE DRIVER: numbers are meaningless (tests/cuda_fake stands in for"
    echo "the GPU; this run checks the script and the programs only)"
    echo "=================================================================="
    MODAL_CUDA_LIBRARY=$fakedir/libcuda.so.1
    # Enough devices for every example's request (H100:4, A100-80GB).
    h100='NVIDIA H100 80GB HBM3|81559|9.0|GPU-11111111-2222-3333-4444-00000000000'
    MODAL_FAKE_CUDA_DEVICES="${h100}1;${h100}2;${h100}3;${h100}4;NVIDIA A100-SXM4-80GB|81920|8.0|GPU-11111111-2222-3333-4444-0000000000a8"
    MODAL_FAKE_CUDA_KERNELS=$fakedir/libfake_remote_kernels.so
    export MODAL_CUDA_LIBRARY MODAL_FAKE_CUDA_DEVICES MODAL_FAKE_CUDA_KERNELS
    for f in "$MODAL_CUDA_LIBRARY" "$MODAL_FAKE_CUDA_KERNELS"; do
        [ -r "$f" ] || { echo "run.sh: $f is missing (make cuda-fake and the test double's kernels: make test builds them)" >&2; exit 2; }
    done
fi

tmp=$(mktemp -d /tmp/modal-gpu-check.XXXXXX)
rtpid=
cleanup() {
    if [ -n "$rtpid" ]; then
        kill "$rtpid" 2>/dev/null
        wait "$rtpid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The runtime picks a free loopback port itself and prints it.
"$bin/modal-runtime" --state-dir "$tmp/state" --listen tcp:127.0.0.1:0 \
    --kernel-worker "$bin/modal-kernel-worker" >"$tmp/runtime.out" 2>&1 &
rtpid=$!
port=
i=0
while [ $i -lt 100 ]; do
    port=$(sed -n 's/.*listening tcp:127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$tmp/runtime.out" | head -n 1)
    [ -n "$port" ] && [ -s "$tmp/state/token" ] && break
    kill -0 "$rtpid" 2>/dev/null || break
    sleep 0.1
    i=$((i + 1))
done
if [ -z "$port" ]; then
    echo "run.sh: the runtime did not start; it printed:" >&2
    cat "$tmp/runtime.out" >&2
    exit 1
fi
MODAL_RUNTIME_URL=http://127.0.0.1:$port
MODAL_TOKEN=$(cat "$tmp/state/token")
MODAL_QUIET_LOGS=1
export MODAL_RUNTIME_URL MODAL_TOKEN MODAL_QUIET_LOGS
echo "runtime: $MODAL_RUNTIME_URL (state in $tmp/state)"
"$bin/modal-runtime" --gpus 2>/dev/null | sed 's/^/  /'

table=$tmp/table
failed=0
row() { # check, value, target, result
    printf '%-46s %-24s %-16s %s\n' "$1" "$2" "$3" "$4" >>"$table"
    [ "$4" = FAIL ] && failed=1
    return 0
}

# Every GPU example, with a time limit each.
for e in "$ex"/gpu_*; do
    [ -x "$e" ] || continue
    n=$(basename "$e")
    t0=$(date +%s.%N)
    if timeout 120 "$e" >"$tmp/$n.out" 2>&1; then
        r=PASS
    elif grep -q 'asks for gpu "[^"]*" but this runtime has' "$tmp/$n.out"; then
        # Its GPU request can never be met here ("H100:4" on one GPU):
        # the runtime refused it at once, naming what it has.
        r="SKIP: $(grep -o 'asks for gpu "[^"]*"' "$tmp/$n.out" | head -n 1)"
    else
        r=FAIL
        echo "--- $n failed; its output:" >&2
        tail -n 20 "$tmp/$n.out" >&2
    fi
    t1=$(date +%s.%N)
    row "example $n" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f s", b - a }')" \
        "CPU reference" "$r"
done
ls "$ex"/gpu_* >/dev/null 2>&1 || row "GPU examples" "none found" "all pass" FAIL

# The measurements: gpu_bench prints "row|check|value|target|PASS/FAIL".
benchflag=
[ "$fake" = 1 ] && benchflag=--fake
if ! timeout 180 "$bench" $benchflag >"$tmp/bench.out" 2>&1; then
    row "gpu_bench" "exit status $?" "0" FAIL
fi
grep '^row|' "$tmp/bench.out" | while IFS='|' read -r _ c v t r; do
    printf '%-46s %-24s %-16s %s\n' "$c" "$v" "$t" "$r"
done >>"$table"
grep -q '^row|.*|FAIL$' "$tmp/bench.out" && failed=1
grep -v '^row|' "$tmp/bench.out" | sed 's/^/  gpu_bench: /'

echo
[ "$fake" = 1 ] && echo "FAKE DRIVER: numbers are meaningless"
printf '%-46s %-24s %-16s %s\n' "check" "value" "target" "result"
cat "$table"
if [ "$failed" != 0 ]; then
    echo "run.sh: some checks failed"
    exit 1
fi
echo "run.sh: every check passed"
