/*
 * Batched small GEMM for the tfjs wasm backend: C[b] = op(A[b]) · op(B[b]), float32, row-major,
 * op = identity or transpose. Built for wasm32 with SIMD128 by scripts/build-wasm-kernels.sh.
 *
 * Why: tfjs-backend-wasm 4.22 sends every batched or transposed matMul to a scalar loop
 * (~1-2.5 GFLOP/s); the attention products of a ViT (Q·Kᵀ, A·V and their gradients,
 * [B·H, 65, 64]-sized) were a third of a MoCo step. See docs/trainer.md.
 *
 * The module imports the tfjs backend's own memory (env.memory), so tensors are read and written
 * in place: every pointer here is a byte offset in the tfjs heap. It has no data segment and no
 * stack (the build script checks that no __stack_pointer is used), so it never writes outside
 * the buffers it is given. `scratch` must hold K·N floats (used only when transB).
 */
#include <wasm_simd128.h>

typedef unsigned int u32;

/* One block of up to 4 rows × 8 columns of C over the full K; A(i,k) = a[i·sai + k·sak]. */
static inline void block_4x8(const float *a, u32 sai, u32 sak, const float *b, u32 ldb, float *c, u32 ldc, u32 rows, u32 K) {
  v128_t c00 = wasm_f32x4_splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  const float *a0 = a, *a1 = a + (rows > 1 ? sai : 0), *a2 = a + (rows > 2 ? 2 * sai : 0), *a3 = a + (rows > 3 ? 3 * sai : 0);
  for (u32 k = 0; k < K; k++) {
    const v128_t b0 = wasm_v128_load(b + k * ldb), b1 = wasm_v128_load(b + k * ldb + 4);
    const u32 o = k * sak;
    v128_t x = wasm_f32x4_splat(a0[o]);
    c00 = wasm_f32x4_add(c00, wasm_f32x4_mul(x, b0));
    c01 = wasm_f32x4_add(c01, wasm_f32x4_mul(x, b1));
    x = wasm_f32x4_splat(a1[o]);
    c10 = wasm_f32x4_add(c10, wasm_f32x4_mul(x, b0));
    c11 = wasm_f32x4_add(c11, wasm_f32x4_mul(x, b1));
    x = wasm_f32x4_splat(a2[o]);
    c20 = wasm_f32x4_add(c20, wasm_f32x4_mul(x, b0));
    c21 = wasm_f32x4_add(c21, wasm_f32x4_mul(x, b1));
    x = wasm_f32x4_splat(a3[o]);
    c30 = wasm_f32x4_add(c30, wasm_f32x4_mul(x, b0));
    c31 = wasm_f32x4_add(c31, wasm_f32x4_mul(x, b1));
  }
  wasm_v128_store(c, c00);
  wasm_v128_store(c + 4, c01);
  if (rows > 1) { wasm_v128_store(c + ldc, c10); wasm_v128_store(c + ldc + 4, c11); }
  if (rows > 2) { wasm_v128_store(c + 2 * ldc, c20); wasm_v128_store(c + 2 * ldc + 4, c21); }
  if (rows > 3) { wasm_v128_store(c + 3 * ldc, c30); wasm_v128_store(c + 3 * ldc + 4, c31); }
}

/* Columns j0..N-1 (fewer than 8) of rows i0.. of C, scalar; A as above, B(k,j) = b[k·ldb + j]. */
static void tail_columns(const float *a, u32 sai, u32 sak, const float *b, u32 ldb, float *c, u32 ldc, u32 M, u32 N, u32 j0, u32 K) {
  for (u32 i = 0; i < M; i++) {
    for (u32 j = j0; j < N; j++) {
      float s = 0;
      for (u32 k = 0; k < K; k++) s += a[i * sai + k * sak] * b[k * ldb + j];
      c[i * ldc + j] = s;
    }
  }
}

/* C [M, N] = A · B with A(i,k) = a[i·sai + k·sak] and B [K, N] row-major. */
static void gemm(const float *a, u32 sai, u32 sak, const float *b, float *c, u32 M, u32 N, u32 K) {
  const u32 n8 = N & ~7u;
  for (u32 i = 0; i < M; i += 4) {
    const u32 rows = M - i < 4 ? M - i : 4;
    for (u32 j = 0; j < n8; j += 8) block_4x8(a + i * sai, sai, sak, b + j, N, c + i * N + j, N, rows, K);
  }
  if (n8 < N) tail_columns(a, sai, sak, b, N, c, N, M, N, n8, K);
}

/* dst [K, N] = transpose of src [N, K]. */
static void transpose(const float *src, float *dst, u32 N, u32 K) {
  for (u32 j = 0; j < N; j++)
    for (u32 k = 0; k < K; k++) dst[k * N + j] = src[j * K + k];
}

/*
 * For every batch index: C[M, N] = op(A) · op(B). A is [M, K] ([K, M] when transA), B is [K, N]
 * ([N, K] when transB). strideA / strideB are the batch strides in floats (0 broadcasts).
 */
__attribute__((export_name("bmm")))
void bmm(const float *a, const float *b, float *c, float *scratch, u32 batch, u32 M, u32 N, u32 K, u32 strideA, u32 strideB, u32 transA, u32 transB) {
  const u32 sai = transA ? 1 : K, sak = transA ? M : 1;
  for (u32 p = 0; p < batch; p++) {
    const float *ap = a + p * strideA;
    const float *bp = b + p * strideB;
    if (transB) {
      if (p == 0 || strideB != 0) transpose(bp, scratch, N, K);
      bp = scratch;
    }
    gemm(ap, sai, sak, bp, c + p * M * N, M, N, K);
  }
}
