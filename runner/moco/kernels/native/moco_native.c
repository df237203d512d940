/*
 * The trainer's elementwise kernels as native code (kernels/native-kernels.ts compiles this file
 * with the machine's C compiler, -O3 -march=native, on first use, and calls it through koffi on
 * views of the tfjs wasm heap, like OpenBLAS). Why: between the matrix products, a MoCo step is
 * elementwise work (GELU, LayerNorm, softmax) that wasm SIMD128 runs 4 lanes wide without FMA;
 * here the compiler vectorises it for the cores' own width (16 lanes with AVX-512).
 *
 * Plain C loops written so that GCC and Clang vectorise them (`omp simd`, branch-free min/max,
 * no calls): no intrinsics, so the same file builds on any architecture. Sums run in a fixed
 * order per build, so a run repeats itself.
 *
 * GELU: the same erf (Eigen/TensorFlow's rational approximation for float) and exp (range
 * reduction, degree-6 polynomial) as the wasm kernel gelu.c.
 */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* -fopenmp-simd makes these hints (no OpenMP runtime): vectorise, and reassociate these sums. */
#define SIMD _Pragma("omp simd")
#define PRAGMA(x) _Pragma(#x)
/*
 * The update loops must round exactly as the composed tfjs ops: no fused multiply-adds there
 * (the rest of the file may contract a·b + c into one FMA).
 */
#if defined(__clang__)
#define NO_FMA
#define NO_FMA_BODY _Pragma("clang fp contract(off)")
#else
#define NO_FMA __attribute__((optimize("fp-contract=off")))
#define NO_FMA_BODY
#endif
#define SIMD_SUM(v) PRAGMA(omp simd reduction(+:v))

/*
 * Threads. The large kernels split their work into chunks (image×head pairs, runs of rows or
 * elements) that the calling thread and up to moco_set_threads(n) − 1 helpers take in turn. The
 * caller never waits for a helper that has not started: it takes whatever chunks are left itself
 * and waits only for chunks a helper has already claimed, so a loaded machine, where a helper may
 * not be scheduled for a while, costs no more than one thread would. Every output element is
 * computed by one chunk with the same code, so the results do not depend on the thread count.
 * The claim counter carries the job's generation: a helper that wakes late cannot take a chunk
 * of a later job with an earlier job's arguments.
 */
typedef void (*chunk_fn)(const void *job, int64_t chunk);
static struct {
  pthread_mutex_t mu;
  pthread_cond_t wake;
  int helpers;                  /* started */
  int wanted;                   /* moco_set_threads − 1 */
  chunk_fn fn;
  const void *job;
  int64_t chunks;
  uint32_t gen;
  uint64_t claim;               /* atomic: gen << 32 | next chunk */
  int64_t done;                 /* atomic: chunks finished */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0, 0};

/* Takes chunks of generation `gen` until none is left; returns how many it ran. */
static int64_t run_chunks(uint32_t gen, chunk_fn fn, const void *job, int64_t chunks) {
  int64_t ran = 0;
  for (;;) {
    uint64_t c = __atomic_load_n(&pool.claim, __ATOMIC_ACQUIRE);
    if ((uint32_t)(c >> 32) != gen || (int64_t)(c & 0xffffffffu) >= chunks) return ran;
    if (!__atomic_compare_exchange_n(&pool.claim, &c, c + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
    fn(job, (int64_t)(c & 0xffffffffu));
    __atomic_add_fetch(&pool.done, 1, __ATOMIC_ACQ_REL);
    ran++;
  }
}

static void *helper_main(void *unused) {
  (void)unused;
  uint32_t seen = 0;
  for (;;) {
    pthread_mutex_lock(&pool.mu);
    while (pool.gen == seen) pthread_cond_wait(&pool.wake, &pool.mu);
    seen = pool.gen;
    const chunk_fn fn = pool.fn;
    const void *job = pool.job;
    const int64_t chunks = pool.chunks;
    pthread_mutex_unlock(&pool.mu);
    run_chunks(seen, fn, job, chunks);
  }
  return 0;
}

/* Threads the large kernels use, the caller's included (1: no helpers). Returns the count in use. */
int moco_set_threads(int n) {
  pthread_mutex_lock(&pool.mu);
  pool.wanted = n > 1 ? n - 1 : 0;
  while (pool.helpers < pool.wanted) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    const int ok = pthread_create(&t, &attr, helper_main, 0) == 0;
    pthread_attr_destroy(&attr);
    if (!ok) {
      pool.wanted = pool.helpers;
      break;
    }
    pool.helpers++;
  }
  const int in_use = pool.wanted + 1;
  pthread_mutex_unlock(&pool.mu);
  return in_use;
}

/* Runs fn(job, c) for every c < chunks, on the caller and the helpers; returns when all are done. */
static void parallel_for(chunk_fn fn, const void *job, int64_t chunks) {
  if (pool.wanted == 0 || chunks < 2) {
    for (int64_t c = 0; c < chunks; c++) fn(job, c);
    return;
  }
  pthread_mutex_lock(&pool.mu);
  const uint32_t gen = ++pool.gen;
  pool.fn = fn;
  pool.job = job;
  pool.chunks = chunks;
  __atomic_store_n(&pool.done, 0, __ATOMIC_RELEASE);
  __atomic_store_n(&pool.claim, (uint64_t)gen << 32, __ATOMIC_RELEASE);
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.mu);
  run_chunks(gen, fn, job, chunks);
  while (__atomic_load_n(&pool.done, __ATOMIC_ACQUIRE) < chunks) sched_yield();
}

/* Thread-local scratch, grown on demand (each thread runs its own chunks). */
static float *scratch_of(int64_t floats) {
  static __thread float *buf;
  static __thread int64_t cap;
  if (cap < floats) {
    free(buf);
    buf = malloc((size_t)floats * sizeof(float));
    cap = buf ? floats : 0;
  }
  return buf;
}

/* Elements per chunk of the elementwise kernels: large enough that a chunk outweighs a claim. */
#define ELEMENT_CHUNK 65536
static int64_t chunks_of(int64_t n, int64_t per) { return (n + per - 1) / per; }

static inline float clampf(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

static inline float erf_approx(float x) {
  x = clampf(x, -4.f, 4.f);
  const float x2 = x * x;
  float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
  p = x2 * p + -2.10102402082508e-06f;
  p = x2 * p + -5.69250639462346e-05f;
  p = x2 * p + -7.34990630326855e-04f;
  p = x2 * p + -2.95459980854025e-03f;
  p = x2 * p + -1.60960333262415e-02f;
  p = x * p;
  float q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
  q = x2 * q + -1.68282697438203e-03f;
  q = x2 * q + -7.37332916720468e-03f;
  q = x2 * q + -1.42647390514189e-02f;
  return p / q;
}

/* e^x for x ≤ 0, clamped below at −87 so 2^k stays a normal float. */
static inline float exp_nonpositive(float x) {
  x = x < -87.f ? -87.f : x;
  /* round to nearest by the 1.5·2^23 trick (exact for |k| < 2^22): no libm call in the loop */
  const float k = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  float r = k * -0.693359375f + x;
  r = k * 2.12194440e-4f + r;
  float p = 1.f / 720;
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = ((int32_t)k + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

static inline float cdf(float x) { return 0.5f * (1.f + erf_approx(x * 0.70710678118654752f)); }

/* y[i] = x[i]·Φ(x[i]) */
static void gelu_range(const float *restrict x, float *restrict y, int64_t n) {
  SIMD for (int64_t i = 0; i < n; i++) y[i] = x[i] * cdf(x[i]);
}

/* dx[i] = dy[i]·(Φ(x[i]) + x[i]·φ(x[i])) */
static void gelu_grad_range(const float *restrict x, const float *restrict dy, float *restrict dx, int64_t n) {
  SIMD for (int64_t i = 0; i < n; i++) {
    const float v = x[i];
    const float pdf = 0.398942280401432678f * exp_nonpositive(-0.5f * v * v);
    dx[i] = dy[i] * (cdf(v) + v * pdf);
  }
}

/*
 * LayerNorm over the last axis of x [rows, cols]: y = (x − mean)·rstd·w + b, rstd = 1/√(var + eps)
 * with the biased variance (two passes, as the composed ops). Also writes mean and rstd [rows]
 * for the gradient.
 */
static void layernorm_rows(const float *restrict x, const float *restrict w, const float *restrict b, float *restrict y,
                    float *restrict mean, float *restrict rstd, int64_t rows, int64_t cols, float eps) {
  const float inv = 1.f / (float)cols;
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * cols;
    float *yr = y + r * cols;
    float s = 0.f;
    SIMD_SUM(s) for (int64_t c = 0; c < cols; c++) s += xr[c];
    const float m = s * inv;
    float ss = 0.f;
    SIMD_SUM(ss) for (int64_t c = 0; c < cols; c++) ss += (xr[c] - m) * (xr[c] - m);
    const float rs = 1.f / __builtin_sqrtf(ss * inv + eps);
    SIMD for (int64_t c = 0; c < cols; c++) yr[c] = (xr[c] - m) * rs * w[c] + b[c];
    mean[r] = m;
    rstd[r] = rs;
  }
}

/*
 * Its gradient: with x̂ = (x − mean)·rstd and g = dy·w,
 *   dx = rstd·(g − mean(g) − x̂·mean(g·x̂))   (per row)
 *   dw = Σ_rows dy·x̂,  db = Σ_rows dy        (per column, rows summed in order)
 */
void moco_layernorm_grad(const float *restrict dy, const float *restrict x, const float *restrict w,
                         const float *restrict mean, const float *restrict rstd, float *restrict dx,
                         float *restrict dw, float *restrict db, int64_t rows, int64_t cols) {
  const float inv = 1.f / (float)cols;
  SIMD for (int64_t c = 0; c < cols; c++) {
    dw[c] = 0.f;
    db[c] = 0.f;
  }
  for (int64_t r = 0; r < rows; r++) {
    const float *dyr = dy + r * cols, *xr = x + r * cols;
    float *dxr = dx + r * cols;
    const float m = mean[r], rs = rstd[r];
    float sg = 0.f, sgx = 0.f;
    SIMD_SUM(sg) for (int64_t c = 0; c < cols; c++) sg += dyr[c] * w[c];
    SIMD_SUM(sgx) for (int64_t c = 0; c < cols; c++) sgx += dyr[c] * w[c] * ((xr[c] - m) * rs);
    const float a = sg * inv, k = sgx * inv;
    SIMD for (int64_t c = 0; c < cols; c++) {
      const float xh = (xr[c] - m) * rs;
      dxr[c] = rs * (dyr[c] * w[c] - a - xh * k);
      dw[c] += dyr[c] * xh;
      db[c] += dyr[c];
    }
  }
}

/* Softmax along the last axis of scale·x [rows, cols], scale > 0 (so the row maximum of x gives that of scale·x). */
void moco_softmax(const float *restrict x, float *restrict y, int64_t rows, int64_t cols, float scale) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * cols;
    float *yr = y + r * cols;
    float mx = xr[0];
    PRAGMA(omp simd reduction(max:mx)) for (int64_t c = 1; c < cols; c++) mx = xr[c] > mx ? xr[c] : mx;
    float s = 0.f;
    SIMD_SUM(s) for (int64_t c = 0; c < cols; c++) {
      const float e = exp_nonpositive(scale * (xr[c] - mx));
      yr[c] = e;
      s += e;
    }
    const float inv = 1.f / s;
    SIMD for (int64_t c = 0; c < cols; c++) yr[c] *= inv;
  }
}

/* Its gradient from the output y: dx = scale·y·(dy − Σ dy·y) per row. */
void moco_softmax_grad(const float *restrict y, const float *restrict dy, float *restrict dx, int64_t rows, int64_t cols, float scale) {
  for (int64_t r = 0; r < rows; r++) {
    const float *yr = y + r * cols, *dyr = dy + r * cols;
    float *dxr = dx + r * cols;
    float s = 0.f;
    SIMD_SUM(s) for (int64_t c = 0; c < cols; c++) s += dyr[c] * yr[c];
    SIMD for (int64_t c = 0; c < cols; c++) dxr[c] = scale * yr[c] * (dyr[c] - s);
  }
}

/*
 * One AdamW step of a tensor (optim.ts has the algebra), the same float32 operations in the same
 * order as the composed tfjs ops and heap-kernels.ts's JS loop, so bit for bit their result:
 * sqrtf and division are correctly rounded, the constants come rounded to float32 from the
 * caller, and NO_FMA keeps multiply-adds unfused in these two loops whatever -ffp-contract says.
 */
NO_FMA void moco_adamw(const float *restrict p, const float *restrict g, const float *restrict m, const float *restrict v,
                float *restrict mo, float *restrict vo, float *restrict po, int64_t n,
                float b1, float c1, float b2, float c2, float bc2, float eps, float decay, float step) {
  NO_FMA_BODY
  SIMD for (int64_t i = 0; i < n; i++) {
    const float gi = g[i];
    const float mi = m[i] * b1 + gi * c1;
    const float vi = v[i] * b2 + (gi * gi) * c2;
    const float denom = __builtin_sqrtf(vi) / bc2 + eps;
    po[i] = p[i] * decay - (mi / denom) * step;
    mo[i] = mi;
    vo[i] = vi;
  }
}

/* The momentum encoder's moving average k·a + q·b (a = m, b = 1 − m), as the composed ops. */
NO_FMA void moco_ema(const float *restrict k, const float *restrict q, float *restrict out, int64_t n, float a, float b) {
  NO_FMA_BODY
  SIMD for (int64_t i = 0; i < n; i++) out[i] = k[i] * a + q[i] * b;
}

/*
 * Multi-head attention on the dense layers' own layout, no head transposes: q, k, v and o are
 * [batch·tokens, heads·dh] (token-major, head h in columns h·dh … h·dh+dh−1). Per (batch, head):
 *   P = softmax(scale·q·kᵀ) [tokens, tokens] (kept for the gradient, [batch, heads, T, T]),
 *   o = P·v.
 * Generic version (any dh): kᵀ of one head is first copied into `kt` [dh, T] (scratch), so every
 * inner loop runs along a contiguous row: scores along keys, outputs along dh.
 */
static void attention_generic(const float *restrict q, const float *restrict k, const float *restrict v, float *restrict o,
                    float *restrict p, float *restrict kt, int64_t bh0, int64_t bh1, int64_t tokens, int64_t heads, int64_t dh, float scale) {
  const int64_t T = tokens, D = heads * dh;
  for (int64_t bh = bh0; bh < bh1; bh++) {
    {
      const int64_t b = bh / heads, h = bh % heads;
      const float *qb = q + b * T * D + h * dh, *kb = k + b * T * D + h * dh, *vb = v + b * T * D + h * dh;
      float *ob = o + b * T * D + h * dh;
      float *pb = p + (b * heads + h) * T * T;
      for (int64_t j = 0; j < T; j++)
        for (int64_t d = 0; d < dh; d++) kt[d * T + j] = kb[j * D + d];
      for (int64_t i = 0; i < T; i++) {
        float *s = pb + i * T;
        const float *qi = qb + i * D;
        SIMD for (int64_t j = 0; j < T; j++) s[j] = 0.f;
        for (int64_t d = 0; d < dh; d++) {
          const float qd = qi[d] * scale;
          const float *ktd = kt + d * T;
          SIMD for (int64_t j = 0; j < T; j++) s[j] += qd * ktd[j];
        }
        float mx = s[0];
        PRAGMA(omp simd reduction(max:mx)) for (int64_t j = 1; j < T; j++) mx = s[j] > mx ? s[j] : mx;
        float sum = 0.f;
        SIMD_SUM(sum) for (int64_t j = 0; j < T; j++) {
          const float e = exp_nonpositive(s[j] - mx);
          s[j] = e;
          sum += e;
        }
        const float inv = 1.f / sum;
        SIMD for (int64_t j = 0; j < T; j++) s[j] *= inv;
        float *oi = ob + i * D;
        SIMD for (int64_t d = 0; d < dh; d++) oi[d] = 0.f;
        for (int64_t j = 0; j < T; j++) {
          const float pij = s[j];
          const float *vj = vb + j * D;
          SIMD for (int64_t d = 0; d < dh; d++) oi[d] += pij * vj[d];
        }
      }
    }
  }
}

/*
 * Its gradient from do_ [batch·tokens, D] and the kept P: with dP = dO·vᵀ and
 * dS = P∘(dP − rowsum(P∘dP))·scale,  dq = dS·k,  dk = dSᵀ·q,  dv = Pᵀ·dO  (per batch and head).
 * Generic version (any dh); scratch: dh·T + T floats (vᵀ of one head, then one row of dS).
 */
static void attention_grad_generic(const float *restrict do_, const float *restrict q, const float *restrict k, const float *restrict v,
                         const float *restrict p, float *restrict dq, float *restrict dk, float *restrict dv,
                         float *restrict scratch, int64_t bh0, int64_t bh1, int64_t tokens, int64_t heads, int64_t dh, float scale) {
  const int64_t T = tokens, D = heads * dh;
  float *vt = scratch, *ds = scratch + dh * T;
  for (int64_t bh = bh0; bh < bh1; bh++) {
    {
      const int64_t b = bh / heads, h = bh % heads;
      const int64_t at = b * T * D + h * dh;
      const float *qb = q + at, *kb = k + at, *vb = v + at, *dob = do_ + at;
      float *dqb = dq + at, *dkb = dk + at, *dvb = dv + at;
      const float *pb = p + (b * heads + h) * T * T;
      for (int64_t j = 0; j < T; j++) {
        SIMD for (int64_t d = 0; d < dh; d++) {
          dkb[j * D + d] = 0.f;
          dvb[j * D + d] = 0.f;
        }
        for (int64_t d = 0; d < dh; d++) vt[d * T + j] = vb[j * D + d];
      }
      for (int64_t i = 0; i < T; i++) {
        const float *pi = pb + i * T, *doi = dob + i * D, *qi = qb + i * D;
        /* dP row i = dO_i · vᵀ, along the keys */
        SIMD for (int64_t j = 0; j < T; j++) ds[j] = 0.f;
        for (int64_t d = 0; d < dh; d++) {
          const float g = doi[d];
          const float *vtd = vt + d * T;
          SIMD for (int64_t j = 0; j < T; j++) ds[j] += g * vtd[j];
        }
        float dot = 0.f;
        SIMD_SUM(dot) for (int64_t j = 0; j < T; j++) dot += pi[j] * ds[j];
        SIMD for (int64_t j = 0; j < T; j++) ds[j] = pi[j] * (ds[j] - dot) * scale;
        float *dqi = dqb + i * D;
        SIMD for (int64_t d = 0; d < dh; d++) dqi[d] = 0.f;
        for (int64_t j = 0; j < T; j++) {
          const float sij = ds[j], pij = pi[j];
          const float *kj = kb + j * D;
          float *dkj = dkb + j * D, *dvj = dvb + j * D;
          SIMD for (int64_t d = 0; d < dh; d++) {
            dqi[d] += sij * kj[d];
            dkj[d] += sij * qi[d];
            dvj[d] += pij * doi[d];
          }
        }
      }
    }
  }
}

/*
 * The same two kernels when dh is a multiple of 16, with explicit 16-lane vectors (GCC/Clang
 * vector extensions: one zmm with AVX-512, two ymm with AVX2, …) whose accumulators stay in
 * registers across the summed axis, instead of a load-add-store of the partial sums per term.
 * Keys are padded to TP = T rounded up to 16 in the scratch (zeros beyond T, never copied out).
 */
typedef float v16 __attribute__((vector_size(64), aligned(4), may_alias));
#define LANES 16
static inline v16 ld(const float *p) { return *(const v16 *)p; }
static inline void st(float *p, v16 x) { *(v16 *)p = x; }
static inline v16 bc(float x) { return (v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

/* row[0..TP) = Σ_d a[d]·mt[d·TP + ·] (mt: [dh, TP], padded with zeros) */
static inline void row_times(const float *a, const float *mt, float *row, int64_t dh, int64_t TP) {
  for (int64_t jb = 0; jb < TP; jb += LANES) {
    v16 acc = bc(0.f);
    for (int64_t d = 0; d < dh; d++) acc += bc(a[d]) * ld(mt + d * TP + jb);
    st(row + jb, acc);
  }
}

/* out[0..dh) = Σ_j w[j·ws]·m[j·D + ·] for j < T (rows of m strided by D); dh ≤ 64·k handled in blocks of 4 vectors */
static inline void weighted_rows(const float *w, int64_t ws, const float *m, int64_t D, float *out, int64_t T, int64_t dh) {
  int64_t db = 0;
  for (; db + 4 * LANES <= dh; db += 4 * LANES) {
    v16 a0 = bc(0.f), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t j = 0; j < T; j++) {
      const v16 wj = bc(w[j * ws]);
      const float *mj = m + j * D + db;
      a0 += wj * ld(mj);
      a1 += wj * ld(mj + LANES);
      a2 += wj * ld(mj + 2 * LANES);
      a3 += wj * ld(mj + 3 * LANES);
    }
    st(out + db, a0);
    st(out + db + LANES, a1);
    st(out + db + 2 * LANES, a2);
    st(out + db + 3 * LANES, a3);
  }
  for (; db < dh; db += LANES) {
    v16 a0 = bc(0.f);
    for (int64_t j = 0; j < T; j++) a0 += bc(w[j * ws]) * ld(m + j * D + db);
    st(out + db, a0);
  }
}

/* mt [dh, TP] = mᵀ of one head's rows (m: T rows strided by D), zeros for keys T … TP−1 */
static inline void transpose_head(const float *m, int64_t D, float *mt, int64_t T, int64_t TP, int64_t dh) {
  for (int64_t d = 0; d < dh; d++) {
    float *r = mt + d * TP;
    for (int64_t j = 0; j < T; j++) r[j] = m[j * D + d];
    for (int64_t j = T; j < TP; j++) r[j] = 0.f;
  }
}

static inline int64_t padded(int64_t T) { return (T + LANES - 1) / LANES * LANES; }

/* Scratch floats the attention kernels need for these sizes (either code path). */
static int64_t attention_scratch(int64_t tokens, int64_t dh) {
  const int64_t TP = padded(tokens);
  return dh * TP + tokens * TP + TP;
}

static void attention_vec(const float *restrict q, const float *restrict k, const float *restrict v, float *restrict o,
                    float *restrict p, float *restrict scratch, int64_t bh0, int64_t bh1, int64_t tokens, int64_t heads, int64_t dh, float scale) {
  const int64_t T = tokens, D = heads * dh, TP = padded(T);
  float *kt = scratch, *s = scratch + dh * TP;
  for (int64_t bh = bh0; bh < bh1; bh++) {
    {
      const int64_t b = bh / heads, h = bh % heads;
      const int64_t at = b * T * D + h * dh;
      float *pb = p + (b * heads + h) * T * T;
      transpose_head(k + at, D, kt, T, TP, dh);
      for (int64_t i = 0; i < T; i++) {
        row_times(q + at + i * D, kt, s, dh, TP);
        float mx = s[0];
        for (int64_t j = 1; j < T; j++) mx = s[j] > mx ? s[j] : mx;
        float sum = 0.f;
        float *pi = pb + i * T;
        SIMD_SUM(sum) for (int64_t j = 0; j < T; j++) {
          const float e = exp_nonpositive(scale * (s[j] - mx));
          pi[j] = e;
          sum += e;
        }
        const float inv = 1.f / sum;
        SIMD for (int64_t j = 0; j < T; j++) pi[j] *= inv;
        weighted_rows(pi, 1, v + at, D, o + at + i * D, T, dh);
      }
    }
  }
}

static void attention_grad_vec(const float *restrict do_, const float *restrict q, const float *restrict k, const float *restrict v,
                         const float *restrict p, float *restrict dq, float *restrict dk, float *restrict dv,
                         float *restrict scratch, int64_t bh0, int64_t bh1, int64_t tokens, int64_t heads, int64_t dh, float scale) {
  const int64_t T = tokens, D = heads * dh, TP = padded(T);
  float *vt = scratch, *ds = scratch + dh * TP, *row = ds + T * TP; /* ds: [T, TP], dS of one head */
  for (int64_t bh = bh0; bh < bh1; bh++) {
    {
      const int64_t b = bh / heads, h = bh % heads;
      const int64_t at = b * T * D + h * dh;
      const float *pb = p + (b * heads + h) * T * T;
      transpose_head(v + at, D, vt, T, TP, dh);
      for (int64_t i = 0; i < T; i++) {
        const float *pi = pb + i * T;
        float *dsi = ds + i * TP;
        row_times(do_ + at + i * D, vt, row, dh, TP); /* dP row i */
        float dot = 0.f;
        SIMD_SUM(dot) for (int64_t j = 0; j < T; j++) dot += pi[j] * row[j];
        SIMD for (int64_t j = 0; j < T; j++) dsi[j] = pi[j] * (row[j] - dot) * scale;
        weighted_rows(dsi, 1, k + at, D, dq + at + i * D, T, dh); /* dq_i = Σ_j dS_ij k_j */
      }
      for (int64_t j = 0; j < T; j++) {
        weighted_rows(ds + j, TP, q + at, D, dk + at + j * D, T, dh); /* dk_j = Σ_i dS_ij q_i */
        weighted_rows(pb + j, T, do_ + at, D, dv + at + j * D, T, dh); /* dv_j = Σ_i P_ij dO_i */
      }
    }
  }
}

/* y[r, ·] = b for every row r < rows (a dense layer's output, before BLAS adds x·W onto it). */
void moco_fill_rows(float *restrict y, const float *restrict b, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; r++) memcpy(y + r * cols, b, (size_t)cols * sizeof(float));
}

/* ---- The exported kernels that split their work across the threads (see parallel_for). ---- */

typedef struct {
  const float *x, *dy;
  float *y;
  int64_t n;
} elementwise_job;

static void gelu_chunk(const void *j, int64_t c) {
  const elementwise_job *e = j;
  const int64_t at = c * ELEMENT_CHUNK, n = e->n - at < ELEMENT_CHUNK ? e->n - at : ELEMENT_CHUNK;
  gelu_range(e->x + at, e->y + at, n);
}

static void gelu_grad_chunk(const void *j, int64_t c) {
  const elementwise_job *e = j;
  const int64_t at = c * ELEMENT_CHUNK, n = e->n - at < ELEMENT_CHUNK ? e->n - at : ELEMENT_CHUNK;
  gelu_grad_range(e->x + at, e->dy + at, e->y + at, n);
}

void moco_gelu(const float *x, float *y, int64_t n) {
  const elementwise_job e = {x, 0, y, n};
  parallel_for(gelu_chunk, &e, chunks_of(n, ELEMENT_CHUNK));
}

void moco_gelu_grad(const float *x, const float *dy, float *dx, int64_t n) {
  const elementwise_job e = {x, dy, dx, n};
  parallel_for(gelu_grad_chunk, &e, chunks_of(n, ELEMENT_CHUNK));
}

typedef struct {
  const float *x, *w, *b;
  float *y, *mean, *rstd;
  int64_t rows, cols, per;
  float eps;
} layernorm_job;

static void layernorm_chunk(const void *j, int64_t c) {
  const layernorm_job *l = j;
  const int64_t r0 = c * l->per, n = l->rows - r0 < l->per ? l->rows - r0 : l->per;
  layernorm_rows(l->x + r0 * l->cols, l->w, l->b, l->y + r0 * l->cols, l->mean + r0, l->rstd + r0, n, l->cols, l->eps);
}

void moco_layernorm(const float *x, const float *w, const float *b, float *y, float *mean, float *rstd, int64_t rows, int64_t cols, float eps) {
  const int64_t per = ELEMENT_CHUNK / cols > 0 ? ELEMENT_CHUNK / cols : 1;
  const layernorm_job l = {x, w, b, y, mean, rstd, rows, cols, per, eps};
  parallel_for(layernorm_chunk, &l, chunks_of(rows, per));
}

typedef struct {
  const float *q, *k, *v, *p, *do_;
  float *o, *pout, *dq, *dk, *dv;
  int64_t pairs, per, tokens, heads, dh;
  float scale;
} attention_job;

static void attention_chunk(const void *j, int64_t c) {
  const attention_job *a = j;
  const int64_t bh0 = c * a->per, bh1 = bh0 + a->per < a->pairs ? bh0 + a->per : a->pairs;
  float *scratch = scratch_of(attention_scratch(a->tokens, a->dh));
  if (a->dh % LANES == 0) attention_vec(a->q, a->k, a->v, a->o, a->pout, scratch, bh0, bh1, a->tokens, a->heads, a->dh, a->scale);
  else attention_generic(a->q, a->k, a->v, a->o, a->pout, scratch, bh0, bh1, a->tokens, a->heads, a->dh, a->scale);
}

static void attention_grad_chunk(const void *j, int64_t c) {
  const attention_job *a = j;
  const int64_t bh0 = c * a->per, bh1 = bh0 + a->per < a->pairs ? bh0 + a->per : a->pairs;
  float *scratch = scratch_of(attention_scratch(a->tokens, a->dh));
  if (a->dh % LANES == 0) attention_grad_vec(a->do_, a->q, a->k, a->v, a->p, a->dq, a->dk, a->dv, scratch, bh0, bh1, a->tokens, a->heads, a->dh, a->scale);
  else attention_grad_generic(a->do_, a->q, a->k, a->v, a->p, a->dq, a->dk, a->dv, scratch, bh0, bh1, a->tokens, a->heads, a->dh, a->scale);
}

/* Image×head pairs per chunk: about ELEMENT_CHUNK/4 multiply-adds' worth of work each. */
static int64_t pairs_per_chunk(int64_t tokens, int64_t dh) {
  const int64_t work = 2 * tokens * tokens * dh;
  return work >= ELEMENT_CHUNK * 4 ? 1 : (ELEMENT_CHUNK * 4) / work;
}

/* Returns 0, or −1 when the thread-local scratch could not be allocated (nothing computed then). */
int moco_attention(const float *q, const float *k, const float *v, float *o, float *p, int64_t batch, int64_t tokens, int64_t heads, int64_t dh, float scale) {
  if (!scratch_of(attention_scratch(tokens, dh))) return -1;
  const int64_t pairs = batch * heads, per = pairs_per_chunk(tokens, dh);
  const attention_job a = {q, k, v, 0, 0, o, p, 0, 0, 0, pairs, per, tokens, heads, dh, scale};
  parallel_for(attention_chunk, &a, chunks_of(pairs, per));
  return 0;
}

int moco_attention_grad(const float *do_, const float *q, const float *k, const float *v, const float *p, float *dq, float *dk, float *dv,
                        int64_t batch, int64_t tokens, int64_t heads, int64_t dh, float scale) {
  if (!scratch_of(attention_scratch(tokens, dh))) return -1;
  const int64_t pairs = batch * heads, per = pairs_per_chunk(tokens, dh);
  const attention_job a = {q, k, v, p, do_, 0, 0, dq, dk, dv, pairs, per, tokens, heads, dh, scale};
  parallel_for(attention_grad_chunk, &a, chunks_of(pairs, per));
  return 0;
}
