#!/bin/sh
# bench/run.sh BUILD: run every benchmark once on this machine and print one
# table, each workload beside its floor measured in the same run and beside
# Dask distributed. Builds nothing (`make bench` builds bench/*.c first).
#
#   1. starts a fresh modal-runtime in a temporary state directory, listening
#      on a free loopback TCP port and on <state>/runtime.sock (the socket
#      and token where the embedded default looks when MODAL_HOME=<state>);
#   2. runs $BUILD/bench/floors (raw sockets, memcpy, process spawn);
#   3. runs $BUILD/bench/modal_bench against that runtime (TCP, then the
#      Unix socket both named explicitly and found as the embedded default);
#   4. stops the runtime and runs the floors again (the table keeps the
#      better value of the two passes);
#   5. runs bench/dask_bench.py (Debian's python3-distributed and
#      python3-numpy, through /usr/bin/python3);
#   6. prints the table and the targets, and removes the temporary directory.
#
# Every program prints "metric<TAB>value<TAB>unit" lines; nothing here
# asserts on time. Environment knobs (all optional):
#   MODAL_BENCH_CALLS      warm calls timed, libmodal (default 2000)
#   MODAL_BENCH_MAP_N      map inputs, libmodal (default 100000)
#   DASK_BENCH_CALLS       warm calls timed, Dask (default 500)
#   DASK_BENCH_MAP_N       map inputs, Dask (default 20000: Dask runs a few
#                          hundred tasks/s here, 100000 would take minutes)
#   DASK_BENCH_1GIB_MAX_S  run Dask's 1 GiB round trip only if 16x its
#                          64 MiB time fits (default 120)
#   MODAL_BENCH_NO_DASK=1  skip Dask
#   MODAL_BENCH_ONLY="W.." run only these modal_bench workloads (e.g.
#                          "snapcold cold exec"); default all
#   MODAL_BENCH_RESULTS=F  also keep the raw metric lines in F
set -u
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
bin=$build/bench
runtime=${MODAL_RUNTIME_BIN:-$build/modal-runtime}
py=/usr/bin/python3

for p in "$bin/floors" "$bin/modal_bench" "$runtime"; do
    if [ ! -x "$p" ]; then
        echo "bench/run.sh: $p is missing; run \`make bench\`" >&2
        exit 1
    fi
done

tmp=$(mktemp -d /tmp/modal-bench-XXXXXX) || exit 1
state=$tmp/home
mkdir -p "$state"
results=$tmp/results.tsv
: >"$results"
rtpid=

stop_runtime() {
    [ -n "$rtpid" ] || return 0
    if kill -0 "$rtpid" 2>/dev/null; then
        kill -TERM "$rtpid" 2>/dev/null
        i=0
        while kill -0 "$rtpid" 2>/dev/null && [ $i -lt 150 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        kill -KILL "$rtpid" 2>/dev/null
    fi
    wait "$rtpid" 2>/dev/null
    rtpid=
}
cleanup() {
    stop_runtime
    [ -n "${MODAL_BENCH_RESULTS:-}" ] && cp "$results" "$MODAL_BENCH_RESULTS" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() { echo "== $*" >&2; }

# The machine, for the record.
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start_s=$(date +%s)

# ---- 1. the runtime --------------------------------------------------
note "starting $runtime in $state"
"$runtime" --state-dir "$state" --listen "unix:$state/runtime.sock" \
    --listen tcp:127.0.0.1:0 --idle-exit 900 >"$tmp/runtime.out" 2>&1 &
rtpid=$!
port=
i=0
while [ -z "$port" ] && [ $i -lt 100 ]; do
    port=$(sed -n 's/^listening tcp:.*:\([0-9][0-9]*\)$/\1/p' "$tmp/runtime.out" | head -1)
    [ -n "$port" ] || { sleep 0.1; i=$((i + 1)); }
done
if [ -z "$port" ] || [ ! -s "$state/token" ]; then
    echo "bench/run.sh: the runtime did not start; it printed:" >&2
    cat "$tmp/runtime.out" >&2
    exit 1
fi

# ---- 2. floors -------------------------------------------------------
# Measured twice, before and after the libmodal workloads; the table keeps
# the better of the two (a floor is what the machine can do, and other load
# on a shared machine only ever makes it look worse).
run_floors() {
    note "floors, pass $1 (raw TCP/Unix sockets, memcpy, posix_spawn)"
    timeout 300 "$bin/floors" >>"$results" || echo "bench/run.sh: floors failed" >&2
}
run_floors 1

# ---- 3. libmodal -----------------------------------------------------
note "libmodal against http://127.0.0.1:$port and unix:$state/runtime.sock"
MODAL_RUNTIME_URL=http://127.0.0.1:$port MODAL_TOKEN=$(cat "$state/token") \
    MODAL_BENCH_HOME=$state MODAL_QUIET_LOGS=1 \
    timeout 600 "$bin/modal_bench" ${MODAL_BENCH_ONLY:-} >>"$results" ||
    echo "bench/run.sh: modal_bench failed" >&2
stop_runtime
run_floors 2

# ---- 4. Dask ---------------------------------------------------------
if [ -n "${MODAL_BENCH_NO_DASK:-}" ]; then
    note "Dask skipped (MODAL_BENCH_NO_DASK)"
elif ! "$py" -c 'import distributed, numpy' 2>/dev/null; then
    note "Dask skipped: $py cannot import distributed and numpy" \
         "(apt-get install python3-distributed python3-numpy)"
else
    note "Dask distributed LocalCluster(n_workers=2, threads_per_worker=1, processes=True)"
    (cd "$tmp" && timeout 900 "$py" "$here/dask_bench.py" \
        --calls "${DASK_BENCH_CALLS:-500}" --map-n "${DASK_BENCH_MAP_N:-20000}" \
        --max-1gib-seconds "${DASK_BENCH_1GIB_MAX_S:-120}") >>"$results" ||
        echo "bench/run.sh: dask_bench failed" >&2
fi

# ---- 5. the table ----------------------------------------------------
elapsed=$(( $(date +%s) - start_s ))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "libmodal benchmarks: $(nproc) CPUs ($cpu), $mem, Linux $(uname -r)"
echo "load average before/after: $load_before / $load_after; $elapsed s in all"
echo
awk -F '\t' '
function has(k) { return (k in v) }
function num(k) { return v[k] + 0 }
function fmt(k, digits) {
    if (!has(k)) return "n/a"
    return sprintf("%.*f %s", digits, v[k], u[k])
}
# How many times better libmodal is than Dask; "x" lower is better for
# times (kind "t"), higher is better for rates (kind "r").
function vs(lk, dk, kind,   f) {
    if (!has(lk) || !has(dk) || num(lk) <= 0 || num(dk) <= 0) return "-"
    f = kind == "t" ? num(dk) / num(lk) : num(lk) / num(dk)
    return f >= 1 ? sprintf("%.1fx faster", f) : sprintf("%.1fx slower", 1 / f)
}
function ratio(lk, fk, kind) {
    if (!has(lk) || !has(fk) || num(fk) <= 0) return "-"
    if (kind == "t") return sprintf("%.2fx", num(lk) / num(fk))
    return sprintf("%.0f%% of floor", 100 * num(lk) / num(fk))
}
function row(name, lcell, fcell, rcell, dcell, vcell) {
    printf "| %s | %s | %s | %s | %s | %s |\n", name, lcell, fcell, rcell, dcell, vcell
}
function trow(name, lk, fk, dk, kind, ld, fd, dd) {
    row(name, fmt(lk, ld), fk == "" ? "-" : fmt(fk, fd), fk == "" ? "-" : ratio(lk, fk, kind),
        dk == "" ? "-" : fmt(dk, dd), dk == "" ? "-" : vs(lk, dk, kind))
}
function arow(label, size,   lk, dk, lcell, dcell) {
    lk = "modal.tcp.array_" label
    dk = "dask.array_" label
    lcell = has(lk ".bw") ? sprintf("%.2f GB/s (%.0f ms; %.0f..%.0f)", v[lk ".bw"],
            v[lk ".ms"], v[lk ".min_ms"], v[lk ".max_ms"]) : "n/a"
    if (has(dk ".bw")) dcell = sprintf("%.3f GB/s (%.0f ms)", v[dk ".bw"], v[dk ".ms"])
    else if (has(dk ".skipped")) dcell = sprintf("skipped (projected %.0f s)", v[dk ".skipped"])
    else dcell = "n/a"
    row("array round trip " size ", TCP", lcell, fmt("floor.tcp_bw", 2),
        ratio(lk ".bw", "floor.tcp_bw", "r"), dcell, vs(lk ".bw", dk ".bw", "r"))
}
/^#/ || NF < 3 { next }
# A floor measured twice keeps its better value: the lower time, the
# higher rate.
$1 ~ /^floor\./ && ($1 in v) {
    if (($3 == "us" || $3 == "ms") ? $2 + 0 < v[$1] + 0 : $2 + 0 > v[$1] + 0) v[$1] = $2
    next
}
{ v[$1] = $2; u[$1] = $3 }
END {
    print "| workload | libmodal | floor | ratio to floor | Dask | libmodal vs Dask |"
    print "| --- | --- | --- | --- | --- | --- |"
    trow("warm no-op call, TCP, median", "modal.tcp.warm.median", "floor.tcp_rtt.median",
         "dask.warm.median", "t", 0, 1, 0)
    trow("warm no-op call, TCP, p99", "modal.tcp.warm.p99", "floor.tcp_rtt.p99",
         "dask.warm.p99", "t", 0, 1, 0)
    trow("warm no-op call, Unix socket URL, median", "modal.unixurl.warm.median",
         "floor.unix_rtt.median", "", "t", 0, 1, 0)
    trow("warm no-op call, Unix socket URL, p99", "modal.unixurl.warm.p99",
         "floor.unix_rtt.p99", "", "t", 0, 1, 0)
    trow("warm no-op call, embedded default (Unix), median", "modal.unix.warm.median",
         "floor.unix_rtt.median", "", "t", 0, 1, 0)
    trow("warm no-op call, embedded default (Unix), p99", "modal.unix.warm.p99",
         "floor.unix_rtt.p99", "", "t", 0, 1, 0)
    mcell = has("modal.tcp.map.rate") ? sprintf("%.0f inputs/s (%d inputs)",
            v["modal.tcp.map.rate"], v["modal.tcp.map.inputs"]) : "n/a"
    dcell = has("dask.map.rate") ? sprintf("%.0f inputs/s (%d inputs)",
            v["dask.map.rate"], v["dask.map.inputs"]) : "n/a"
    row("map over no-op inputs, TCP", mcell, "-", "-", dcell,
        vs("modal.tcp.map.rate", "dask.map.rate", "r"))
    arow("1MiB", "1 MiB")
    arow("64MiB", "64 MiB")
    arow("1GiB", "1 GiB")
    row("(floor) memcpy, warm buffers", "-", fmt("floor.memcpy_warm", 2), "-", "-", "-")
    row("(floor) memcpy into fresh 4 KiB pages", "-",
        sprintf("%s (%.1f us/page fault)", fmt("floor.memcpy_cold", 2), v["floor.page_fault"]),
        "-", "-", "-")
    row("(floor) memcpy 1 GiB into fresh huge-page memory", "-",
        fmt("floor.memcpy_cold_thp", 2), "-", "-", "-")
    row("(floor) loopback Unix socket bandwidth", "-", fmt("floor.unix_bw", 2), "-", "-", "-")
    trow("CPU worker cold start (first call - warm call)", "modal.tcp.cold.median",
         "floor.spawn_true.median", "dask.cold.median", "t", 1, 2, 0)
    trow("CPU worker cold start from a memory snapshot (call on a new forked worker - warm call)",
         "modal.tcp.snapshot_cold.median", "floor.spawn_true.median", "", "t", 2, 2, 0)
    trow("(part of cold start) exec of the worker binary, exits at once",
         "modal.host.exec_self.median", "floor.spawn_true.median", "", "t", 1, 2, 0)
    row("Dask: new LocalCluster(1 worker) + first task", "-", "-", "-",
        fmt("dask.cold_cluster.median", 0), "-")

    print ""
    print "Targets:"
    target("warm call <= 3x raw TCP round trip", "modal.tcp.warm.median",
           "floor.tcp_rtt.median", 3, "le", "x")
    target1("map >= 150,000 inputs/s", "modal.tcp.map.rate", 150000, "ge", "inputs/s")
    target("1 GiB round trip >= 50% of loopback TCP bandwidth", "modal.tcp.array_1GiB.bw",
           "floor.tcp_bw", 0.5, "ge", "%")
    target1("CPU cold start <= 5 ms", "modal.tcp.cold.median", 5, "le", "ms")
    target("cold start from a memory snapshot <= 1x posix_spawn of /bin/true",
           "modal.tcp.snapshot_cold.median", "floor.spawn_true.median", 1, "le", "x")
}
function verdict(ok) { return ok ? "met" : "MISSED" }
function target(name, lk, fk, lim, op, what,   r) {
    if (!has(lk) || !has(fk) || num(fk) <= 0) { printf "  %-52s n/a\n", name; return }
    r = num(lk) / num(fk)
    if (what == "%")
        printf "  %-52s %s (%.0f%% of floor)\n", name, verdict(op == "le" ? r <= lim : r >= lim), 100 * r
    else
        printf "  %-52s %s (%.2f%s)\n", name, verdict(op == "le" ? r <= lim : r >= lim), r, what
}
function target1(name, lk, lim, op, what,   x) {
    if (!has(lk)) { printf "  %-52s n/a\n", name; return }
    x = num(lk)
    printf "  %-52s %s (%.1f %s)\n", name, verdict(op == "le" ? x <= lim : x >= lim), x, what
}
' "$results"
echo
echo "Notes: every number comes from this run. Floors (bench/floors.c) are the better"
echo "of two passes, before and after the libmodal workloads. Times are medians;"
echo "array cells give the median round trip and its min..max in ms, and count"
echo "bytes both ways (2 x size / round-trip time). Dask runs with its defaults;"
echo "its map uses fewer inputs than libmodal's (see the counts)."
