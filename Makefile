# libmodal: a plain Makefile, no configure step.
#
#   make            libmodal.a, libmodal.so.MAJOR, modal-runtime, modal.pc
#   make demo       build, start the embedded runtime, run examples/hello remotely
#   make test       build and run every unit, integration and example test
#   make check      the tests under AddressSanitizer+UBSan, then valgrind
#   make fuzz       build the libFuzzer targets (clang); FUZZ_SECONDS=N runs them
#   make bench      benchmarks against their floors (never part of `make test`)
#   make install    PREFIX=/usr/local DESTDIR=
#
# Everything is built under $(BUILD) (default build/), so a sanitizer build
# can live beside the normal one.

VERSION := $(shell sed -n 's/^\#define MODAL_VERSION_STRING "\(.*\)"/\1/p' include/modal.h)
MAJOR   := $(shell sed -n 's/^\#define MODAL_VERSION_MAJOR \([0-9]*\)/\1/p' include/modal.h)

PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
PCDIR   ?= $(LIBDIR)/pkgconfig

BUILD   ?= build
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
SAN     ?=
# nvcc, where there is one. Only GPU code and images are built with it;
# without it they are skipped, saying so, and nothing else depends on it.
NVCC ?= $(shell command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifeq ($(SAN),1)
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
BASEFLAGS := -std=gnu11 -pthread -fPIC $(WARN) $(SANFLAGS) -Iinclude -Ilib -D_GNU_SOURCE
# What a program linked with libmodal needs. libcurl is loaded at run time
# by the client (a worker never needs it, and its cold start stays short).
LIBS    := -lcjson -lpthread -ldl -lm
RTLIBS  := -lssl -lcrypto $(LIBS)
ITLIBS  := -lcurl -lcrypto $(LIBS) -lcmocka

LIB_SRC := $(sort $(wildcard lib/*.c))
RT_SRC  := $(sort $(wildcard runtime/*.c))
RT_MAIN := runtime/main.c
# A libmodal program of its own, not part of the daemon (docs/gpu.md).
KW_SRC  := runtime/kernel_worker.c
RT_LIB_SRC := $(filter-out $(RT_MAIN) $(KW_SRC),$(RT_SRC))
EX_SRC  := $(sort $(wildcard examples/*.c))
# The rules that build kernels into programs (NVCC, %.fatbin, %.fatbin.o),
# installed for users' own Makefiles. Without nvcc the GPU examples
# (examples/gpu_*.c, whose kernels are examples/kernels/*.cu) are not built.
include mk/gpu.mk
# The CUDA test double finds kernel names only in uncompressed images.
MODAL_NVCCFLAGS := -O3 --no-compress
KERN_SRC := $(sort $(wildcard examples/kernels/*.cu))
GPU_EX_SRC := $(sort $(wildcard examples/gpu_*.c))
ifeq ($(strip $(NVCC)),)
EX_SRC  := $(filter-out $(GPU_EX_SRC),$(EX_SRC))
ifneq ($(GPU_EX_SRC),)
$(info examples: nvcc not found (set NVCC=/path/to/nvcc), so the GPU examples are not built: $(notdir $(GPU_EX_SRC:.c=)))
endif
endif
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
INTEG_SRC := $(sort $(wildcard tests/integration/test_*.c))
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
# gpu_bench links fatbins, so it is built on its own rule, with nvcc only.
BENCH_SRC := $(filter-out bench/gpu_bench.c,$(sort $(wildcard bench/*.c)))

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
RT_OBJ  := $(RT_LIB_SRC:%.c=$(BUILD)/obj/%.o)
EX_BIN  := $(EX_SRC:examples/%.c=$(BUILD)/examples/%)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
INTEG_BIN := $(INTEG_SRC:tests/integration/%.c=$(BUILD)/tests/%)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

STATIC  := $(BUILD)/libmodal.a
SHARED  := $(BUILD)/libmodal.so.$(MAJOR)
RUNTIME := $(BUILD)/modal-runtime
KWORKER := $(BUILD)/modal-kernel-worker
PCFILE  := $(BUILD)/modal.pc

PHONY_DEPS := deps deps-build deps-test deps-check deps-fuzz
.PHONY: all $(PHONY_DEPS) demo test check check-asan check-valgrind fuzz bench install \
        uninstall examples clean
all: deps-build $(STATIC) $(SHARED) $(RUNTIME) $(KWORKER) $(PCFILE)

# ---- dependencies ----------------------------------------------------
# The Debian packages each kind of target needs, listed once. `make deps`
# installs them all when run as root (otherwise it names the one command
# to run); every target checks only its own list, so `make` needs neither
# cmocka, valgrind nor clang. Checking is cheap, so every target does it.
DEB_BUILD := build-essential pkg-config libcurl4-openssl-dev libcjson-dev libssl-dev
DEB_TEST  := libcmocka-dev
DEB_CHECK := valgrind
DEB_FUZZ  := clang
DEB_BENCH := python3-distributed python3-numpy
DEB_PKGS  := $(DEB_BUILD) $(DEB_TEST) $(DEB_CHECK) $(DEB_FUZZ) $(DEB_BENCH)
deps:
	@./tools/deps.sh $(DEB_PKGS)
deps-build:
	@./tools/deps.sh $(DEB_BUILD)
deps-test: deps-build
	@./tools/deps.sh $(DEB_TEST)
deps-check: deps-test
	@./tools/deps.sh $(DEB_CHECK)
deps-fuzz:
	@./tools/deps.sh $(DEB_FUZZ)

# ---- library ---------------------------------------------------------
$(BUILD)/obj/lib/%.o: lib/%.c include/modal.h lib/internal.h | deps-build
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -fvisibility=hidden -DMODAL_BUILDING_LIBRARY \
	    -DMODAL_BINDIR='"$(BINDIR)"' -c $< -o $@

$(BUILD)/obj/runtime/%.o: runtime/%.c include/modal.h lib/internal.h $(wildcard runtime/*.h) | deps-build
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -Iruntime -c $< -o $@

# The installed bindir is compiled into the library (where to find
# modal-runtime); this stamp changes only when it does, so `make install
# PREFIX=...` rebuilds what depends on it.
$(BUILD)/bindir.stamp: FORCE
	@mkdir -p $(BUILD)
	@echo '$(BINDIR)' | cmp -s - $@ || echo '$(BINDIR)' > $@
$(BUILD)/obj/lib/embedded.o: $(BUILD)/bindir.stamp
$(addprefix $(BUILD)/obj/lib/,client.o conn.o map.o register.o remote.o): lib/conn.h
$(addprefix $(BUILD)/obj/lib/,cuda.o fatbin.o gpu_inventory.o): lib/cuda.h
$(BUILD)/obj/lib/gpu_remote.o: lib/conn.h lib/gpu_remote.h lib/cuda.h
$(BUILD)/obj/lib/gpu.o $(BUILD)/obj/lib/worker.o $(BUILD)/obj/runtime/worker.o: lib/gpu.h lib/cuda.h
# Every object may use the protocol header (internal.h includes it).
$(LIB_OBJ) $(RT_OBJ): lib/protocol.h
.PHONY: FORCE
FORCE:

$(STATIC): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(SHARED): $(LIB_OBJ) lib/libmodal.map
	$(CC) $(BASEFLAGS) $(CFLAGS) -shared -Wl,-soname,libmodal.so.$(MAJOR) \
	    -Wl,--version-script=lib/libmodal.map -o $@ $(LIB_OBJ) $(LIBS)
	ln -sf libmodal.so.$(MAJOR) $(BUILD)/libmodal.so

$(RUNTIME): $(RT_MAIN) $(RT_OBJ) $(STATIC)
	$(CC) $(BASEFLAGS) $(CFLAGS) -Iruntime -o $@ $< $(RT_OBJ) $(STATIC) $(RTLIBS)

# The runtime's kernel worker (docs/gpu.md, "Remote kernel launch"): a
# libmodal program like the examples, linked statically against libmodal
# so the runtime can store and start it as it is.
$(KWORKER): $(KW_SRC) lib/gpu_remote.h lib/cuda.h $(STATIC)
	$(CC) $(BASEFLAGS) $(CFLAGS) -o $@ $< $(STATIC) $(LIBS)

$(PCFILE): pkgconfig/modal.pc.in include/modal.h $(BUILD)/bindir.stamp
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCDIR@|$(INCDIR)|' -e 's|@VERSION@|$(VERSION)|' $< > $@

# ---- examples, tests, benchmarks --------------------------------------
# Programs link libmodal statically so the executable a worker runs is the
# very file the client uploaded, with no libmodal.so to find on the runtime.
$(BUILD)/examples/%: examples/%.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -o $@ $< $(STATIC) $(LIBS)

# GPU examples link every kernel of examples/kernels, each a fatbin in an
# object of its own (mk/gpu.mk).
# Static pattern rules: these are explicit targets, so make never falls
# back to the plain example rule while the kernels are not built yet.
KERN_FATBIN := $(KERN_SRC:examples/kernels/%.cu=$(BUILD)/kernels/%.fatbin)
KERN_OBJ := $(KERN_FATBIN:%=%.o)
GPU_EX_BIN := $(GPU_EX_SRC:examples/%.c=$(BUILD)/examples/%)
$(KERN_FATBIN): $(BUILD)/kernels/%.fatbin: examples/kernels/%.cu
	@mkdir -p $(dir $@)
	$(MODAL_FATBIN_RECIPE)
$(KERN_OBJ): %.fatbin.o: %.fatbin
	$(MODAL_FATBIN_OBJ_RECIPE)
$(GPU_EX_BIN): $(BUILD)/examples/gpu_%: examples/gpu_%.c $(KERN_OBJ) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -o $@ $< $(KERN_OBJ) $(STATIC) $(LIBS)

# CPU stand-ins for those kernels, which the CUDA test double runs.
FAKE_KERNELS := $(BUILD)/tests/cuda_fake/libfake_kernels.so
$(FAKE_KERNELS): tests/cuda_fake/kernels.c
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -shared -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(STATIC) tests/unit/testutil.h | deps-test
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -Itests/unit -o $@ $< $(STATIC) $(LIBS) -lcmocka

$(BUILD)/tests/%: tests/integration/%.c $(STATIC) $(RUNTIME) tests/integration/harness.h | deps-test
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -Itests/integration -Iruntime -o $@ $< $(STATIC) $(ITLIBS)

# The HTTP server tested on its own (over TLS), without the rest of the runtime.
$(BUILD)/tests/test_httpd_tls: tests/integration/test_httpd_tls.c runtime/httpd.c \
        runtime/http_parse.c $(wildcard runtime/*.h) $(STATIC) tests/integration/harness.h | deps-test
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -Itests/integration -Iruntime -o $@ $< runtime/httpd.c \
	    runtime/http_parse.c $(STATIC) -lssl $(ITLIBS)

# The runtime's call queue, tested on its own (the test includes queue.c).
$(BUILD)/tests/test_queue: runtime/queue.c $(wildcard runtime/*.h)
# The allocator's accounting, likewise.
$(BUILD)/tests/test_resources: runtime/resources.c $(wildcard runtime/*.h)

# The spawner tested on its own, without the rest of the runtime.
$(BUILD)/tests/test_launch: tests/integration/test_launch.c runtime/launch.c runtime/launch.h \
        $(STATIC) tests/integration/harness.h
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -Itests/integration -Iruntime -o $@ $< runtime/launch.c \
	    $(STATIC) $(ITLIBS)

# The CUDA test double (tests/cuda_fake/fake_cuda.c), which every GPU test
# loads through MODAL_CUDA_LIBRARY: the fake driver, a variant lacking a
# required entry point and one lacking the optional error names.
CUDA_FAKE_DIR := $(BUILD)/tests/cuda_fake
CUDA_FAKE := $(CUDA_FAKE_DIR)/libcuda.so.1 $(CUDA_FAKE_DIR)/libcuda_partial.so.1 \
             $(CUDA_FAKE_DIR)/libcuda_nonames.so.1 $(CUDA_FAKE_DIR)/libfake_selftest.so
CUDA_FAKE_DEPS := tests/cuda_fake/fake_cuda.c lib/cuda.h include/modal.h
$(CUDA_FAKE_DIR)/libcuda.so.1: $(CUDA_FAKE_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -fvisibility=hidden -shared -Wl,-soname,libcuda.so.1 \
	    -o $@ $< -ldl -lpthread
$(CUDA_FAKE_DIR)/libcuda_partial.so.1: $(CUDA_FAKE_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -fvisibility=hidden -DFAKE_OMIT_LAUNCH -shared \
	    -Wl,-soname,libcuda.so.1 -o $@ $< -ldl -lpthread
$(CUDA_FAKE_DIR)/libcuda_nonames.so.1: $(CUDA_FAKE_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -fvisibility=hidden -DFAKE_OMIT_ERROR_NAMES -shared \
	    -Wl,-soname,libcuda.so.1 -o $@ $< -ldl -lpthread
# The CPU stand-in of the kernel the fake's own test launches.
$(CUDA_FAKE_DIR)/libfake_selftest.so: tests/cuda_fake/selftest_kernels.c
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -shared -o $@ $<
# A real fatbin for the parser's tests, of the project's GPU targets: SASS
# for sm_80 and sm_90, PTX for compute_90 (absent without nvcc: the tests
# that read it are then skipped, saying so).
CUDA_GENCODE := $(MODAL_GPU_ARCHS)
CUDA_TEST_DATA := $(if $(NVCC),$(BUILD)/tests/data/arch.fatbin)
$(BUILD)/tests/data/arch.fatbin: tests/cuda_fake/arch.cu
	@mkdir -p $(dir $@)
	$(NVCC) -fatbin $(CUDA_GENCODE) -o $@ $<
$(BUILD)/tests/test_cuda: | $(CUDA_FAKE) $(CUDA_TEST_DATA)
$(BUILD)/tests/test_gpu_placement: | $(CUDA_FAKE)
cuda-fake: $(CUDA_FAKE)
.PHONY: cuda-fake
# The GPU tests run the examples and their kernels' stand-ins on the fake.
$(BUILD)/tests/test_gpu_examples: | $(EX_BIN) $(FAKE_KERNELS) $(CUDA_FAKE)
$(BUILD)/tests/test_gpu_kernels: | $(FAKE_KERNELS) $(CUDA_FAKE)

# Remote kernel launch's tests and the fake run of tests/gpu/run.sh: the
# stand-ins of their kernels and of the examples' ones, in one library.
REMOTE_FAKE_KERNELS := $(CUDA_FAKE_DIR)/libfake_remote_kernels.so
REMOTE_FAKE_SRC := tests/cuda_fake/remote_kernels.c $(wildcard tests/cuda_fake/kernels.c)
$(REMOTE_FAKE_KERNELS): $(REMOTE_FAKE_SRC)
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -shared -o $@ $(REMOTE_FAKE_SRC)
$(BUILD)/tests/test_gpu_remote: tests/integration/test_gpu_remote.c lib/gpu_remote.h \
        | $(KWORKER) $(CUDA_FAKE) $(REMOTE_FAKE_KERNELS)

$(BUILD)/bench/%: bench/%.c bench/bench.h $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -o $@ $< $(STATIC) $(LIBS)

# ---- checking on a real GPU (docs/gpu.md) --------------------------------
# gpu_bench measures what tests/gpu/run.sh reports; its kernels are
# examples/kernels/saxpy.cu and bench/kernels/empty.cu, linked in.
GPU_BENCH := $(if $(NVCC),$(BUILD)/bench/gpu_bench)
$(BUILD)/kernels/%.fatbin: bench/kernels/%.cu
	@mkdir -p $(dir $@)
	$(MODAL_FATBIN_RECIPE)
$(BUILD)/bench/gpu_bench: bench/gpu_bench.c bench/bench.h $(BUILD)/kernels/saxpy.fatbin.o \
        $(BUILD)/kernels/empty.fatbin.o $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -o $@ $< $(filter %.fatbin.o,$^) $(STATIC) $(LIBS)

# build/gpu-bundle: what run.sh needs on a GPU machine with nothing of ours
# built there (Ubuntu 24.04 with gcc, make, nvcc, libcurl and OpenSSL; no
# cJSON, libmicrohttpd or cmocka): the programs, the GPU examples, the
# test double for --fake, and the shared libraries such a machine lacks
# (GPU_BUNDLE_LIBS, which `ldd` on the programs shows: libssl, libcrypto,
# libm and libc are there, libcurl is loaded at run time).
GPU_BUNDLE := $(BUILD)/gpu-bundle
GPU_BUNDLE_LIBS := libcjson.so.1
GPU_EX_BIN = $(filter $(BUILD)/examples/gpu_%,$(EX_BIN))
gpu-bundle: all $(EX_BIN) $(GPU_BENCH) $(CUDA_FAKE) $(REMOTE_FAKE_KERNELS)
	@if [ -z "$(NVCC)" ]; then echo "gpu-bundle: nvcc not found (set NVCC=/path/to/nvcc):" \
	    "the GPU examples and gpu_bench cannot be built without it" >&2; exit 1; fi
	rm -rf $(GPU_BUNDLE)
	mkdir -p $(GPU_BUNDLE)/bin $(GPU_BUNDLE)/examples $(GPU_BUNDLE)/lib $(GPU_BUNDLE)/fake
	cp $(RUNTIME) $(KWORKER) $(GPU_BENCH) $(GPU_BUNDLE)/bin/
	cp $(GPU_EX_BIN) $(GPU_BUNDLE)/examples/
	cp $(CUDA_FAKE_DIR)/libcuda.so.1 $(REMOTE_FAKE_KERNELS) $(GPU_BUNDLE)/fake/
	cp tests/gpu/run.sh $(GPU_BUNDLE)/run.sh
	@for l in $(GPU_BUNDLE_LIBS); do \
	    p=$$(ldd $(RUNTIME) $(KWORKER) | awk -v l=$$l '$$1 == l { print $$3; exit }'); \
	    [ -n "$$p" ] || { echo "gpu-bundle: no $$l among the programs' libraries" >&2; exit 1; }; \
	    cp -L "$$p" $(GPU_BUNDLE)/lib/$$l || exit 1; \
	done
	@echo "gpu-bundle: $(GPU_BUNDLE) is ready: copy it to the GPU machine and run run.sh there"
.PHONY: gpu-bundle

examples: $(EX_BIN)

# The examples test runs every built example.
$(BUILD)/tests/test_examples: | $(EX_BIN)

# The fake run of tests/gpu/run.sh needs these (and nvcc, for GPU_BENCH).
test: $(GPU_BENCH) $(REMOTE_FAKE_KERNELS)
test: all $(UNIT_BIN) $(INTEG_BIN) $(EX_BIN) $(CUDA_FAKE) $(FAKE_KERNELS)
	@MODAL_RUNTIME_BIN=$(abspath $(RUNTIME)) ./tests/run.sh $(BUILD) $(UNIT_BIN) $(INTEG_BIN) \
	    "./tests/install_test.sh $(BUILD)" "./tests/deps_test.sh $(BUILD)" \
	    "$(if $(NVCC),env BUILD=$(BUILD) ./tests/gpu/run.sh --fake,echo tests/gpu/run.sh --fake: skipped: no nvcc to build the GPU programs)" \
	    "./tests/layering.sh $(BUILD)"

demo: all $(BUILD)/examples/hello
	@MODAL_RUNTIME_BIN=$(abspath $(RUNTIME)) $(BUILD)/examples/hello

# Dask is the peer the benchmarks compare against: installed here as root,
# or its column is skipped, saying why, when it cannot be.
bench: all $(BENCH_BIN) $(BUILD)/examples/hello
	@if [ -z "$${MODAL_BENCH_NO_DASK:-}" ] && ! ./tools/deps.sh $(DEB_BENCH); then \
	    echo "bench: Dask is not installed, so its column is skipped (see above)" >&2; \
	    export MODAL_BENCH_NO_DASK=1; fi; \
	MODAL_RUNTIME_BIN=$(abspath $(RUNTIME)) ./bench/run.sh $(BUILD)

# ---- sanitizers, valgrind, fuzzing --------------------------------------
check: check-asan check-valgrind

check-asan:
	$(MAKE) BUILD=build-asan SAN=1 CFLAGS="-O1 -g" test

check-valgrind: all $(UNIT_BIN) | deps-check
	@./tests/valgrind.sh $(UNIT_BIN)

FUZZ_SECONDS ?= 0
FUZZ_FLAGS := -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Ilib -D_GNU_SOURCE
$(BUILD)/fuzz/%: tests/fuzz/%.c $(LIB_SRC) include/modal.h lib/internal.h | deps-build deps-fuzz
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $< $(LIB_SRC) $(LIBS)

# The HTTP parser lives in the runtime, a pure function on its own.
$(BUILD)/fuzz/fuzz_http: tests/fuzz/fuzz_http.c runtime/http_parse.c runtime/http_parse.h | deps-fuzz
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -Iruntime -o $@ $< runtime/http_parse.c

fuzz: $(FUZZ_BIN)
	@if [ "$(FUZZ_SECONDS)" != 0 ]; then ./tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_BIN); fi

# ---- install ------------------------------------------------------------
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(PCDIR)
	install -m 644 include/modal.h $(DESTDIR)$(INCDIR)/modal.h
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/libmodal.a
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/libmodal.so.$(MAJOR)
	ln -sf libmodal.so.$(MAJOR) $(DESTDIR)$(LIBDIR)/libmodal.so
	install -m 755 $(RUNTIME) $(DESTDIR)$(BINDIR)/modal-runtime
	install -m 755 $(KWORKER) $(DESTDIR)$(BINDIR)/modal-kernel-worker
	install -m 644 $(PCFILE) $(DESTDIR)$(PCDIR)/modal.pc
	install -d $(DESTDIR)$(PREFIX)/share/modal
	install -m 644 mk/gpu.mk $(DESTDIR)$(PREFIX)/share/modal/gpu.mk

uninstall:
	rm -f $(DESTDIR)$(INCDIR)/modal.h $(DESTDIR)$(LIBDIR)/libmodal.a \
	      $(DESTDIR)$(LIBDIR)/libmodal.so.$(MAJOR) $(DESTDIR)$(LIBDIR)/libmodal.so \
	      $(DESTDIR)$(BINDIR)/modal-runtime $(DESTDIR)$(BINDIR)/modal-kernel-worker \
	      $(DESTDIR)$(PCDIR)/modal.pc $(DESTDIR)$(PREFIX)/share/modal/gpu.mk

clean:
	rm -rf build build-asan

.SECONDARY:
