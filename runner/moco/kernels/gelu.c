/*
 * Exact GELU and its gradient, fused, for the tfjs wasm backend (wasm32 SIMD128):
 *   y  = x·Φ(x),                 Φ(x) = (1 + erf(x/√2)) / 2
 *   dx = dy·(Φ(x) + x·φ(x)),     φ(x) = exp(−x²/2) / √(2π)
 * Why: composed from tfjs ops, the forward pass is 5 kernels and the gradient 11, each a full
 * pass over a [B·T, 4·D] tensor, with tfjs's scalar Erf the slowest of them.
 *
 * erf: the rational approximation Eigen and TensorFlow use for float (x clamped to [−4, 4],
 * odd degree-13 numerator over even degree-8 denominator; error ~1e-7). exp: range reduction to
 * 2^k·e^r with a degree-6 polynomial (~1e-7 relative). Same memory rules as bmm.c.
 */
#include <wasm_simd128.h>

typedef unsigned int u32;

static inline v128_t splat(float v) { return wasm_f32x4_splat(v); }
static inline v128_t madd(v128_t a, v128_t b, v128_t c) { return wasm_f32x4_add(wasm_f32x4_mul(a, b), c); }

static inline v128_t erf4(v128_t x) {
  x = wasm_f32x4_max(wasm_f32x4_min(x, splat(4.f)), splat(-4.f));
  const v128_t x2 = wasm_f32x4_mul(x, x);
  v128_t p = madd(x2, splat(-2.72614225801306e-10f), splat(2.77068142495902e-08f));
  p = madd(x2, p, splat(-2.10102402082508e-06f));
  p = madd(x2, p, splat(-5.69250639462346e-05f));
  p = madd(x2, p, splat(-7.34990630326855e-04f));
  p = madd(x2, p, splat(-2.95459980854025e-03f));
  p = madd(x2, p, splat(-1.60960333262415e-02f));
  p = wasm_f32x4_mul(x, p);
  v128_t q = madd(x2, splat(-1.45660718464996e-05f), splat(-2.13374055278905e-04f));
  q = madd(x2, q, splat(-1.68282697438203e-03f));
  q = madd(x2, q, splat(-7.37332916720468e-03f));
  q = madd(x2, q, splat(-1.42647390514189e-02f));
  return wasm_f32x4_div(p, q);
}

/* e^x for x ≤ 0 (here −x²/2), clamped below at −87 so 2^k stays a normal float. */
static inline v128_t exp_nonpositive4(v128_t x) {
  x = wasm_f32x4_max(x, splat(-87.f));
  const v128_t k = wasm_f32x4_nearest(wasm_f32x4_mul(x, splat(1.44269504088896341f)));
  v128_t r = madd(k, splat(-0.693359375f), x);
  r = madd(k, splat(2.12194440e-4f), r);
  v128_t p = splat(1.f / 720);
  p = madd(p, r, splat(1.f / 120));
  p = madd(p, r, splat(1.f / 24));
  p = madd(p, r, splat(1.f / 6));
  p = madd(p, r, splat(0.5f));
  p = madd(p, r, splat(1.f));
  p = madd(p, r, splat(1.f));
  const v128_t scale = wasm_i32x4_shl(wasm_i32x4_add(wasm_i32x4_trunc_sat_f32x4(k), wasm_i32x4_splat(127)), 23);
  return wasm_f32x4_mul(p, scale);
}

static inline v128_t cdf4(v128_t x) { return wasm_f32x4_mul(splat(0.5f), wasm_f32x4_add(splat(1.f), erf4(wasm_f32x4_mul(x, splat(0.70710678118654752f))))); }

/* Lanes i..n−1 (fewer than 4) of a, zeros after: tails go through the vector code, with no stack. */
static inline v128_t load_tail(const float *a, u32 i, u32 n) {
  return wasm_f32x4_make(a[i], i + 1 < n ? a[i + 1] : 0.f, i + 2 < n ? a[i + 2] : 0.f, 0.f);
}
static inline void store_tail(float *a, u32 i, u32 n, v128_t v) {
  a[i] = wasm_f32x4_extract_lane(v, 0);
  if (i + 1 < n) a[i + 1] = wasm_f32x4_extract_lane(v, 1);
  if (i + 2 < n) a[i + 2] = wasm_f32x4_extract_lane(v, 2);
}

/* y[i] = GELU(x[i]) for i < n. */
__attribute__((export_name("gelu")))
void gelu(const float *x, float *y, u32 n) {
  u32 i = 0;
  for (; i + 4 <= n; i += 4) {
    const v128_t v = wasm_v128_load(x + i);
    wasm_v128_store(y + i, wasm_f32x4_mul(v, cdf4(v)));
  }
  if (i < n) {
    const v128_t v = load_tail(x, i, n);
    store_tail(y, i, n, wasm_f32x4_mul(v, cdf4(v)));
  }
}

static inline v128_t gelu_grad4(v128_t v, v128_t d) {
  const v128_t pdf = wasm_f32x4_mul(splat(0.398942280401432678f), exp_nonpositive4(wasm_f32x4_mul(splat(-0.5f), wasm_f32x4_mul(v, v))));
  return wasm_f32x4_mul(d, madd(v, pdf, cdf4(v)));
}

/* dx[i] = dy[i]·GELU'(x[i]) for i < n. */
__attribute__((export_name("gelu_grad")))
void gelu_grad(const float *x, const float *dy, float *dx, u32 n) {
  u32 i = 0;
  for (; i + 4 <= n; i += 4) wasm_v128_store(dx + i, gelu_grad4(wasm_v128_load(x + i), wasm_v128_load(dy + i)));
  if (i < n) store_tail(dx, i, n, gelu_grad4(load_tail(x, i, n), load_tail(dy, i, n)));
}
