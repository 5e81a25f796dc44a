/*
 * wgmma.cuh: Hopper warpgroup matrix products (wgmma, sm_90a) for the SSD kernels: the shared-memory matrix
 * descriptor, the fence / commit / wait wrappers, and the two m64n64k16 bf16 products the SSD kernels use.
 *
 * A warpgroup is 4 consecutive warps (128 threads, the first warp index a multiple of 4). One wgmma computes
 * D (64 x 64, fp32, in registers) += A (64 x 16) B (16 x 64), asynchronously: it is issued, committed to a group,
 * and its results (and the registers it reads) are only safe after wgmma.wait_group.
 *
 * Register layouts (the same as mma.sync m16n8k16's, per warp w of the warpgroup, lane l, g = l/4, t = l%4):
 *   D: d[4 nt + e] holds row 16w + g + 8 (e/2), column 8 nt + 2 t + (e%2), for the 8 column tiles nt of 8.
 *   A from registers (bf16 pairs): a[0] (row 16w+g, k 2t..2t+1), a[1] (row +8), a[2] (k + 8), a[3] (row +8, k +8).
 *
 * Shared-memory operands, without swizzle ("interleaved" layout): the unit is the core matrix, 8 rows of 16 bytes
 * (8 bf16) stored as 128 contiguous bytes. A tile of R rows and C columns (C % 8 == 0) is stored here with the
 * core matrices in row-group-major order:
 *     element (r, c) at byte ((r/8) * (C/8) + c/8) * 128 + (r%8) * 16 + (c%8) * 2        (wg_tile_offset)
 * so 8 consecutive threads copying the 8 rows of one core matrix write 128 contiguous bytes (no bank conflicts),
 * and the tensor cores read each core matrix as one 128-byte line. The descriptor gives two strides:
 *   LBO ("leading dimension byte offset"): between core matrices adjacent along K,
 *   SBO ("stride dimension byte offset"): between core matrices adjacent along M (for A) or N (for B).
 * K-major operand (rows = M or N, columns = K, K contiguous; C B^T's both operands): LBO = 128, SBO = C/8 * 128.
 * MN-major operand (rows = K, columns = N, N contiguous; the x tile of S x): LBO = C/8 * 128, SBO = 128, and the
 * product's transpose bit for that operand set. One k16 step advances a K-major start address by 2 core
 * matrices (256 bytes) and an MN-major one by 2 row groups (2 * C/8 * 128 bytes).
 * wg_desc: bits 0-13 start address >> 4, 16-29 LBO >> 4, 32-45 SBO >> 4, 62-63 swizzle mode (0: none).
 * dev/cuda/wgmma_check.cu proves these conventions against a CPU product before any kernel relies on them.
 *
 * Ordering rules the kernels follow:
 *   - shared memory written by ordinary stores or cp.async and then read by wgmma: each writing thread runs
 *     wg_fence_proxy_async() (the tensor cores read through the async proxy) before the barrier.
 *   - registers written by ordinary instructions (the accumulators, A fragments) and then used by wgmma:
 *     wg_fence() before the first wgmma of the batch.
 *   - accumulators read after wg_wait<0>(): wg_pin_acc() on them, so the compiler cannot move their reads (or
 *     writes) across the asynchronous product (it sees the asm outputs as defined when the wgmma was issued).
 */
#ifndef MAMBA2_WGMMA_CUH
#define MAMBA2_WGMMA_CUH

#include <stdint.h>

#if !defined(ENABLE_FP32)

__device__ static inline uint32_t wg_saddr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* element offset of (r, c) in a tile of C columns stored as row-group-major core matrices (see the top) */
__host__ __device__ static inline int wg_tile_offset(int r, int c, int C) {
    return (((r >> 3) * (C >> 3) + (c >> 3)) << 6) + ((r & 7) << 3) + (c & 7);
}

/* shared-memory matrix descriptor, no swizzle */
__device__ static inline uint64_t wg_desc(const void* smem, uint32_t lbo_bytes, uint32_t sbo_bytes) {
    uint64_t a = (wg_saddr(smem) & 0x3FFFFu) >> 4;
    return a | ((uint64_t)((lbo_bytes >> 4) & 0x3FFFu) << 16) | ((uint64_t)((sbo_bytes >> 4) & 0x3FFFu) << 32);
}

__device__ static inline void wg_fence(void) { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ static inline void wg_commit(void) { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ static inline void wg_wait(void) {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* ordinary shared-memory writes (st.shared, cp.async) made visible to the async proxy that wgmma reads through */
__device__ static inline void wg_fence_proxy_async(void) {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
/* pin 32 accumulator registers: an empty volatile asm that "reads and writes" them, ordered with the wgmma asms */
__device__ static inline void wg_pin_acc(float d[32]) {
#pragma unroll
    for (int i = 0; i < 32; i++) asm volatile("" : "+f"(d[i])::"memory");
}

#define WG_D32                                                                                              \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define WG_D32_OPS(d)                                                                                        \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),          \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),    \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),  \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])

/* d (64 x 64 fp32) += A (64 x 16, descriptor da) B (16 x 64, descriptor db), both bf16 in shared memory.
   TA, TB: the transpose bits (0: K-major operand, 1: MN-major). */
template <int TA, int TB>
__device__ static inline void wg_mma_ss(float d[32], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_D32 ", %32, %33, p, 1, 1, %35, %36;\n}\n"
                 : WG_D32_OPS(d)
                 : "l"(da), "l"(db), "r"(1), "n"(TA), "n"(TB));
}
/* d (64 x 64 fp32) += A (64 x 16 bf16, registers a[4] in the layout at the top) B (16 x 64, descriptor db) */
template <int TB>
__device__ static inline void wg_mma_rs(float d[32], const uint32_t a[4], uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " WG_D32
                 ", {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
                 : WG_D32_OPS(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1), "n"(TB));
}

#endif /* !ENABLE_FP32 */
#endif
