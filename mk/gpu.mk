# gpu.mk: make rules that compile CUDA kernels into a program that uses
# libmodal, so they travel inside its executable (docs/gpu.md, "Kernels in
# your program"). Include it from your Makefile:
#
#   include $(shell pkg-config --variable=prefix modal)/share/modal/gpu.mk
#   app: app.c saxpy.fatbin.o
#   	$(CC) -o $@ app.c saxpy.fatbin.o $(shell pkg-config --cflags --libs modal)
#
# and declare the image in app.c with MODAL_GPU_IMAGE(saxpy).
#
#   %.fatbin: %.cu         nvcc -fatbin: SASS for sm_80 and sm_90, and PTX for
#                          compute_90 that newer GPUs compile when they load it
#   %.fatbin.o: %.fatbin   an object whose symbol modal_gpu_image_<stem> (in
#                          .rodata, aligned to 16) is the fatbin's first byte

# nvcc: from PATH, else the toolkit's usual place; empty when there is none.
NVCC ?= $(shell command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
# The architectures: SASS for A100 (sm_80) and H100/H200 (sm_90), PTX for
# compute_90, which the driver compiles for anything newer.
MODAL_GPU_ARCHS ?= -gencode arch=compute_80,code=sm_80 \
                   -gencode 'arch=compute_90,code=[sm_90,compute_90]'
MODAL_NVCCFLAGS ?= -O3

# The recipes, for rules of your own with other directories:
#   build/%.fatbin: src/%.cu ; $(MODAL_FATBIN_RECIPE)
MODAL_FATBIN_RECIPE = $(if $(NVCC),,$(error nvcc not found: set NVCC=/path/to/nvcc to build $@)) \
    $(NVCC) -fatbin $(MODAL_GPU_ARCHS) $(MODAL_NVCCFLAGS) -o $@ $<
# The symbol is named for the file's stem, with characters other than
# letters, digits and '_' made '_' (saxpy-v2.fatbin: modal_gpu_image_saxpy_v2).
MODAL_FATBIN_OBJ_RECIPE = sym=modal_gpu_image_$$(basename '$<' .fatbin | tr -c 'A-Za-z0-9_\n' '_'); \
    printf '%s\n' '.section .rodata' '.balign 16' ".globl $$sym" ".type $$sym, @object" \
        "$$sym:" '.incbin "$(abspath $<)"' ".size $$sym, . - $$sym" \
        '.section .note.GNU-stack,"",@progbits' | $(CC) -c -x assembler -o $@ -

%.fatbin: %.cu
	$(MODAL_FATBIN_RECIPE)

%.fatbin.o: %.fatbin
	$(MODAL_FATBIN_OBJ_RECIPE)
