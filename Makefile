# mamba2.c build
#   make                 the CPU programs (train_mamba2)
#   make test            build and run the CPU test suites (CI runs it after `make cuda`, which compiles every CUDA
#                        target; make test itself needs no nvcc)
#   make train           prepare the default corpus if missing, build, train a small model on it
#   make cuda            compile every CUDA target (needs nvcc; no GPU needed to compile)
#   make test_cu         (GPU machine) build and run the GPU tests, on the GPU's default path, then the portable path
#                        (MAMBA2_PORTABLE=1), then the portable path under a 99 KB shared-memory limit (doc/gpus.md)
#   make bench           (GPU machine) the 130M training benchmark, the per-kernel profile, the SSD layer alone
#   PRECISION=FP32       fp32 CUDA build (exact comparisons with the CPU trainer; GPUs below sm_80); default BF16
#   GPU_ARCHS="80 90a"   the GPU architectures the CUDA programs hold code for (default: every one from Ampere on,
#                        one binary; doc/gpus.md); DEV_GPU_ARCHS the same for the dev/cuda programs (default 90a)
#   NO_OMP=1             build the CPU programs without OpenMP

CC ?= gcc
CFLAGS ?= -O3 -march=native
CFLAGS += -std=c11 -Wall -Wextra -Wno-unused-function -D_POSIX_C_SOURCE=200809L
LDLIBS = -lm
PYTHON ?= python3

# OpenMP is optional: used when the compiler supports it
# (CPU_REF_FLAGS: the same for the GPU tests that compile the CPU trainer in as their reference)
ifeq ($(NO_OMP),1)
  CFLAGS += -Wno-unknown-pragmas
  CPU_REF_FLAGS = -Xcompiler -Wno-unknown-pragmas
else
  OMP_OK := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo yes)
  ifeq ($(OMP_OK),yes)
    CFLAGS += -fopenmp
    CPU_REF_FLAGS = -Xcompiler -fopenmp -lgomp
  else
    CFLAGS += -Wno-unknown-pragmas
    CPU_REF_FLAGS = -Xcompiler -Wno-unknown-pragmas
  endif
endif

# CUDA
NVCC ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
# one fat binary: a cubin per architecture of GPU_ARCHS (the runtime loads the device's; llmc/gpu_arch.cuh decides the
# path at start-up), plus the PTX of GPU_PTX (default: the newest, 120) that the driver compiles for GPUs newer than
# the list. 90a (not 90): Hopper's wgmma kernels. nvcc compiles the architectures in parallel (--threads 0).
GPU_ARCHS ?= 80 86 89 90a 100 120
GPU_PTX ?= $(if $(filter 120,$(GPU_ARCHS)),120,)
DEV_GPU_ARCHS ?= 90a
gencode_flags = $(foreach a,$(1),-gencode=arch=compute_$(a),code=sm_$(a)) \
  $(foreach a,$(2),-gencode=arch=compute_$(a),code=compute_$(a)) $(if $(word 2,$(1)),--threads 0,)
CUDA_ARCH ?= $(call gencode_flags,$(GPU_ARCHS),$(GPU_PTX))
DEV_CUDA_ARCH ?= $(call gencode_flags,$(DEV_GPU_ARCHS),)
# NVCC_DEVICE_OPT: CI's compile check sets "-Xcicc -O1 -Xptxas -O1" (half the time; ptxas still checks every
# kernel's assembly); the binaries that run and are timed use the defaults (full optimization)
NVCC_DEVICE_OPT ?=
NVCC_FLAGS = -O3 -std=c++17 -I. --expt-relaxed-constexpr -Xcompiler -Wall $(NVCC_DEVICE_OPT) \
  $(if $(strip $(NVCC_DEVICE_OPT)),-DMAMBA2_REDUCED_DEVICE_OPT,)
NVCC_LIBS = -lcublas -lcublasLt
# multi-GPU: NCCL (from the CUDA installation) unless NO_MULTI_GPU=1; OpenMPI when mpi.h is found unless NO_USE_MPI=1
ifeq ($(NO_MULTI_GPU),1)
  NVCC_FLAGS += -DNO_MULTI_GPU
else
  NVCC_LIBS += -lnccl
  ifneq ($(NO_USE_MPI),1)
    MPI_INC := $(shell mpicc --showme:compile 2>/dev/null)
    MPI_LINK := $(shell mpicc --showme:link 2>/dev/null)
    ifneq ($(MPI_INC),)
      NVCC_FLAGS += -DUSE_MPI $(MPI_INC)
      NVCC_LIBS += $(MPI_LINK)
    endif
  endif
endif
ifeq ($(PRECISION),FP32)
  NVCC_FLAGS += -DENABLE_FP32
endif

HEADERS = llmc/utils.h llmc/rand.h llmc/schedulers.h llmc/mamba2_model.h llmc/dataloader.h llmc/tokenizer.h llmc/train_common.h

.PHONY: all test train cuda cuda_variants cuda_port test_cu clean deps bench fuzz

deps:
	@sh scripts/install_deps.sh

all: train_mamba2 eval_mamba2 generate_mamba2 export_mamba2

train_mamba2: train_mamba2.c $(HEADERS) $(INTEROP_HEADERS)
	$(CC) $(CFLAGS) -o $@ train_mamba2.c $(LDLIBS)

test_mamba2: test_mamba2.c train_mamba2.c $(HEADERS) llmc/safetensors.h llmc/json.h dev/hf_fixture.h dev/test_report.h
	$(CC) $(CFLAGS) -o $@ test_mamba2.c $(LDLIBS)

test_mamba2_fd: test_mamba2.c train_mamba2.c $(HEADERS) dev/test_report.h
	$(CC) $(CFLAGS) -DMAMBA2_DOUBLE -o $@ test_mamba2.c $(LDLIBS)

INTEROP_HEADERS = llmc/hf_io.h llmc/safetensors.h llmc/safetensors_write.h llmc/json.h llmc/bpe.h llmc/unicode_tables.h

eval_mamba2: eval_mamba2.c generate_mamba2.c train_mamba2.c $(HEADERS) $(INTEROP_HEADERS)
	$(CC) $(CFLAGS) -o $@ eval_mamba2.c $(LDLIBS)

generate_mamba2: generate_mamba2.c train_mamba2.c $(HEADERS) $(INTEROP_HEADERS)
	$(CC) $(CFLAGS) -o $@ generate_mamba2.c $(LDLIBS)

export_mamba2: export_mamba2.c $(HEADERS) $(INTEROP_HEADERS)
	$(CC) $(CFLAGS) -o $@ export_mamba2.c $(LDLIBS)

test_interop: test_interop.c generate_mamba2.c train_mamba2.c $(HEADERS) $(INTEROP_HEADERS)
	$(CC) $(CFLAGS) -o $@ test_interop.c $(LDLIBS)

test_dataloader: test_dataloader.c llmc/dataloader.h llmc/utils.h
	$(CC) $(CFLAGS) -o $@ test_dataloader.c $(LDLIBS)

test_safetensors: test_safetensors.c llmc/safetensors.h llmc/json.h
	$(CC) $(CFLAGS) -o $@ test_safetensors.c $(LDLIBS)

test_rendezvous: test_rendezvous.c llmc/multigpu.h llmc/utils.h
	$(CC) $(CFLAGS) -o $@ test_rendezvous.c $(LDLIBS)

# the readers' fuzz harnesses (clang, libFuzzer; the Python unpickler's own mutation fuzzer): a short run of each;
# FUZZ_SECONDS=600 sh dev/fuzz/run_fuzz.sh bpe runs one for ten minutes
fuzz:
	sh dev/fuzz/run_fuzz.sh
	$(PYTHON) dev/fuzz/fuzz_unpickler.py --seconds $${FUZZ_SECONDS:-6}

dev/ssd_tutorial: dev/ssd_tutorial.c
	$(CC) $(CFLAGS) -o $@ dev/ssd_tutorial.c $(LDLIBS)

# every suite prints "N passed, N failed" last; scripts/run_tests.sh sums them
test: deps
	$(MAKE) train_mamba2 eval_mamba2 generate_mamba2 export_mamba2 test_mamba2 test_mamba2_fd test_dataloader test_safetensors \
	  test_interop test_rendezvous dev/ssd_tutorial
	PYTHON=$(PYTHON) sh scripts/run_tests.sh

# the default corpus: the Python standard library's sources, byte-level tokens (no network)
DATA_DIR = data/stdlib
$(DATA_DIR)/tokenizer.bin:
	$(PYTHON) data/prepare.py --corpus stdlib --tokenizer byte --outdir $(DATA_DIR)

train: deps
	$(MAKE) train_mamba2 $(DATA_DIR)/tokenizer.bin
	sh scripts/train_default.sh

CUDA_HEADERS = $(wildcard llmc/*.cuh) llmc/cuda_common.h $(HEADERS) $(INTEROP_HEADERS) llmc/train_common.h llmc/multigpu.h

train_mamba2cu: train_mamba2.cu $(CUDA_HEADERS)
	$(NVCC) $(NVCC_FLAGS) $(CUDA_ARCH) -o $@ train_mamba2.cu $(NVCC_LIBS)

train_mamba2cu_fp32: train_mamba2.cu $(CUDA_HEADERS)
	$(NVCC) $(NVCC_FLAGS) $(CUDA_ARCH) -DENABLE_FP32 -o $@ train_mamba2.cu $(NVCC_LIBS)

test_mamba2cu: test_mamba2.cu train_mamba2.c $(CUDA_HEADERS) dev/hf_fixture.h dev/test_report.h dev/gpu_test_util.h
	$(NVCC) $(NVCC_FLAGS) $(CUDA_ARCH) $(CPU_REF_FLAGS) -o $@ test_mamba2.cu $(NVCC_LIBS)

test_mamba2cu_fp32: test_mamba2.cu train_mamba2.c $(CUDA_HEADERS) dev/hf_fixture.h dev/test_report.h dev/gpu_test_util.h
	$(NVCC) $(NVCC_FLAGS) $(CUDA_ARCH) $(CPU_REF_FLAGS) -DENABLE_FP32 -o $@ test_mamba2.cu $(NVCC_LIBS)

# hybrids (attention and MLP blocks, doc/hybrid.md) on the GPU against the CPU trainer's model
test_hybrid: test_hybrid.cu train_mamba2.c $(CUDA_HEADERS) dev/test_report.h dev/gpu_test_util.h
	$(NVCC) $(NVCC_FLAGS) $(CUDA_ARCH) $(CPU_REF_FLAGS) -o $@ test_hybrid.cu $(NVCC_LIBS)

test_hybrid_fp32: test_hybrid.cu train_mamba2.c $(CUDA_HEADERS) dev/test_report.h dev/gpu_test_util.h
	$(NVCC) $(NVCC_FLAGS) $(CUDA_ARCH) $(CPU_REF_FLAGS) -DENABLE_FP32 -o $@ test_hybrid.cu $(NVCC_LIBS)

# the benchmark (GPU machine): Mamba-2 130M, B=8, T=2048, bf16: ms/step, tokens/s, MFU, memory; one step's time by
# kernel family (profile_mamba2cu, CUPTI); then the SSD layer alone at B=8 T=2048, B=1 T=8192 and T=32768
bench: train_mamba2cu profile_mamba2cu $(DATA_DIR)/tokenizer.bin
	./train_mamba2cu -e 130m -b 8 -t 2048 -x 20 -v 0 -s 0 -l 1e-3 -u 5 -p 1 | sed -n '/== benchmark/,$$p'
	./profile_mamba2cu -e 130m -b 8 -t 2048
	$(MAKE) dev/cuda/ssd_bin && ./dev/cuda/ssd_bin Q=128 11 llmc

dev/cuda/ssd_bin: dev/cuda/ssd.cu $(wildcard llmc/ssd*.cuh) llmc/gpu_arch.cuh llmc/wgmma.cuh llmc/cuda_common.h \
  $(wildcard dev/cuda/ssd_lab*.cuh) dev/cuda/kernels_dev.h
	$(NVCC) $(NVCC_FLAGS) $(DEV_CUDA_ARCH) -o $@ dev/cuda/ssd.cu $(NVCC_LIBS)
# the same program in the fp32 build (the simple kernels on every path)
dev/cuda/ssd_fp32_bin: dev/cuda/ssd.cu $(wildcard llmc/ssd*.cuh) llmc/gpu_arch.cuh llmc/wgmma.cuh llmc/cuda_common.h \
  $(wildcard dev/cuda/ssd_lab*.cuh) dev/cuda/kernels_dev.h
	$(NVCC) $(NVCC_FLAGS) $(DEV_CUDA_ARCH) -DENABLE_FP32 -o $@ dev/cuda/ssd.cu $(NVCC_LIBS)

# the wgmma wrappers' unit test (shared-memory descriptors, layouts) against CPU products; part of make test_cu
dev/cuda/wgmma_check_bin: dev/cuda/wgmma_check.cu llmc/wgmma.cuh llmc/cuda_common.h dev/cuda/kernels_dev.h
	$(NVCC) $(NVCC_FLAGS) $(DEV_CUDA_ARCH) -o $@ dev/cuda/wgmma_check.cu $(NVCC_LIBS)

# one training step timed kernel by kernel (CUPTI, from the CUDA toolkit)
CUPTI_LIB ?= $(dir $(NVCC))../lib
profile_mamba2cu: profile_mamba2.cu $(CUDA_HEADERS)
	$(NVCC) $(NVCC_FLAGS) $(CUDA_ARCH) -o $@ profile_mamba2.cu $(NVCC_LIBS) -L$(CUPTI_LIB) -L$(dir $(NVCC))../extras/CUPTI/lib64 -lcupti

# GPU evaluation and generation (batched prompts, CUDA-graph decode)
generate_mamba2cu: generate_mamba2.cu $(CUDA_HEADERS)
	$(NVCC) $(NVCC_FLAGS) $(CUDA_ARCH) -o $@ generate_mamba2.cu $(NVCC_LIBS)

eval_mamba2cu: eval_mamba2.cu $(CUDA_HEADERS)
	$(NVCC) $(NVCC_FLAGS) $(CUDA_ARCH) -o $@ eval_mamba2.cu $(NVCC_LIBS)

eval_mamba2cu_fp32: eval_mamba2.cu $(CUDA_HEADERS)
	$(NVCC) $(NVCC_FLAGS) $(CUDA_ARCH) -DENABLE_FP32 -o $@ eval_mamba2.cu $(NVCC_LIBS)

test_generate: test_generate.cu $(CUDA_HEADERS)
	$(NVCC) $(NVCC_FLAGS) $(CUDA_ARCH) -o $@ test_generate.cu $(NVCC_LIBS)

test_generate_fp32: test_generate.cu $(CUDA_HEADERS)
	$(NVCC) $(NVCC_FLAGS) $(CUDA_ARCH) -DENABLE_FP32 -o $@ test_generate.cu $(NVCC_LIBS)

# the decode versions that are not the default, checked against the default path and timed (dev/cuda/NOTES_decode.md)
dev/cuda/decode_bin: dev/cuda/decode.cu dev/cuda/decode_versions.cuh dev/cuda/decode_decoder.cuh $(CUDA_HEADERS)
	$(NVCC) $(NVCC_FLAGS) $(DEV_CUDA_ARCH) -o $@ dev/cuda/decode.cu $(NVCC_LIBS)

# GPU tests (GPU machine): fp32 first (exact comparisons), then bf16; the trainer, then generation/evaluation. Each
# on the GPU's default path, then on the portable path (MAMBA2_PORTABLE=1: on an H100 the kernels an A100 runs), then
# the bf16 ones and the SSD's llmc checks on the portable path under a 99 KB shared-memory limit (MAMBA2_SMEM_LIMIT:
# the kernels of sm_86 / 89 / 120); fails if any run fails (doc/gpus.md)
CU_TESTS = train_mamba2 train_mamba2cu train_mamba2cu_fp32 eval_mamba2cu eval_mamba2cu_fp32 test_mamba2cu test_mamba2cu_fp32 \
  test_generate test_generate_fp32 test_hybrid test_hybrid_fp32
CU_SMALL_SMEM = MAMBA2_PORTABLE=1 MAMBA2_SMEM_LIMIT=101376
test_cu: $(CU_TESTS) dev/cuda/wgmma_check_bin dev/cuda/ssd_bin dev/cuda/attention_bin dev/cuda/attention_fp32_bin
	@fail=0; ./dev/cuda/wgmma_check_bin || fail=1; \
	for t in "dev/cuda/attention_fp32_bin test" "dev/cuda/attention_bin test"; do \
	  echo "== test_cu: ./$$t"; ./$$t || { fail=1; echo "== test_cu: FAILED: ./$$t"; }; \
	done; \
	for p in MAMBA2_PORTABLE=0 MAMBA2_PORTABLE=1; do \
	  for t in test_mamba2cu_fp32 test_mamba2cu test_generate_fp32 test_generate test_hybrid_fp32 test_hybrid; do \
	    echo "== test_cu: $$p ./$$t"; env $$p ./$$t || { fail=1; echo "== test_cu: FAILED: $$p ./$$t"; }; \
	  done; \
	done; \
	for t in test_mamba2cu test_generate test_hybrid "dev/cuda/ssd_bin small llmc" "dev/cuda/attention_bin test"; do \
	  echo "== test_cu: $(CU_SMALL_SMEM) ./$$t"; \
	  env $(CU_SMALL_SMEM) ./$$t || { fail=1; echo "== test_cu: FAILED: $(CU_SMALL_SMEM) ./$$t"; }; \
	done; \
	test $$fail -eq 0

# compile every CUDA program (CI has nvcc but no GPU: this keeps compile errors out); each dev/cuda program is a
# target of its own, so make -j builds them side by side
CUDA_DEV_BINS = $(patsubst %.cu,%_bin,$(wildcard dev/cuda/*.cu))
dev/cuda/%_bin: dev/cuda/%.cu $(CUDA_HEADERS) dev/cuda/kernels_dev.h
	$(NVCC) $(NVCC_FLAGS) $(DEV_CUDA_ARCH) -o $@ $< $(NVCC_LIBS)

# the attention kernels' tests in the fp32 build (the simple kernels; dev/cuda/attention_bin tests the bf16 ones)
dev/cuda/attention_fp32_bin: dev/cuda/attention.cu $(CUDA_HEADERS) dev/cuda/kernels_dev.h
	$(NVCC) $(NVCC_FLAGS) -DENABLE_FP32 $(DEV_CUDA_ARCH) -o $@ $< $(NVCC_LIBS)
# the attention test also times the lab's kernels (not in llmc/, so not in CUDA_HEADERS)
dev/cuda/attention_bin dev/cuda/attention_fp32_bin: dev/cuda/attention_lab.cuh
# the warp-specialized SSD dC kernel (issue #28) is a header of its own
dev/cuda/ssd_ws_bin: dev/cuda/ssd_ws.cuh
# the GPU model's logits, loss and gradients for the torch reference, fp32 build (dev/run_hybrid_reference.sh)
dev/cuda/hybrid_dump_fp32_bin: dev/cuda/hybrid_dump.cu $(CUDA_HEADERS)
	$(NVCC) $(NVCC_FLAGS) -DENABLE_FP32 $(DEV_CUDA_ARCH) -o $@ $< $(NVCC_LIBS)

cuda: $(CU_TESTS) generate_mamba2cu eval_mamba2cu profile_mamba2cu $(CUDA_DEV_BINS) dev/cuda/attention_fp32_bin dev/cuda/hybrid_dump_fp32_bin

# the trainer compiled for one more architecture than GPU_ARCHS (CI: sm_80, where CI's GPU_ARCHS is 90a alone), so
# code that only compiles for Hopper is caught without the fat build's time
PORT_ARCH ?= 80
cuda_port: train_mamba2.cu $(CUDA_HEADERS)
	$(NVCC) $(NVCC_FLAGS) $(call gencode_flags,$(PORT_ARCH),) -o /tmp/train_mamba2cu_sm$(PORT_ARCH) train_mamba2.cu \
	  $(NVCC_LIBS)

# the multi-GPU build variants compile too (CI): without NCCL, and with NCCL but without MPI
cuda_variants: train_mamba2.cu $(CUDA_HEADERS)
	$(NVCC) -O1 -std=c++17 $(CUDA_ARCH) $(NVCC_DEVICE_OPT) -I. --expt-relaxed-constexpr -DNO_MULTI_GPU -o /tmp/train_mamba2cu_nomgpu \
	  train_mamba2.cu -lcublas -lcublasLt
	$(NVCC) -O1 -std=c++17 $(CUDA_ARCH) $(NVCC_DEVICE_OPT) -I. --expt-relaxed-constexpr -o /tmp/train_mamba2cu_nompi \
	  train_mamba2.cu -lcublas -lcublasLt -lnccl

clean:
	rm -f dev/ssd_tutorial train_mamba2 eval_mamba2 generate_mamba2 export_mamba2 test_interop test_mamba2 test_mamba2_fd test_dataloader test_safetensors test_rendezvous dev/cuda/*_bin \
	  train_mamba2cu train_mamba2cu_fp32 test_mamba2cu test_mamba2cu_fp32 generate_mamba2cu eval_mamba2cu \
	  test_generate test_generate_fp32 profile_mamba2cu eval_mamba2cu_fp32 test_hybrid test_hybrid_fp32
