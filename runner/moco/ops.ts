/**
 * The differentiable building blocks of the models, with hand-written gradients (tf.customGrad).
 *
 * Why hand-written (DESIGN.md section 4): on tfjs's wasm backend only an untransposed 2-D matMul
 * reaches XNNPACK; the built-in matMul gradient emits transposeA/transposeB products, which fall
 * to a slow scalar loop. Each gradient here transposes explicitly and then multiplies plainly.
 * Where the products run on a native BLAS (kernels/native-blas.ts) a transposed operand costs
 * nothing, and the gradients multiply transposed operands in place instead.
 * Every gradient body runs inside tf.tidy: customGrad calls it outside any tidy, and without one
 * its temporaries would live until the whole backward pass ends.
 *
 * Where the native kernels are built (kernels/native-ops.ts), LayerNorm, multi-head attention (its
 * softmax inside, no head transposes) and GELU run as one native pass each way, and a dense
 * layer's bias is added by its BLAS product.
 *
 * Each op has a numerical-gradient test in test/unit/moco/ops.test.ts (native kernels:
 * test/unit/moco/native-blas.test.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { denseBiasFused, fusedDenseActive, nativeProductsActive, wasmGeluActive, wasmKernelsActive } from './kernels/batch-matmul.js';
import { geluFused, geluGradFused } from './kernels/gelu.js';
import { attentionFused, attentionGradFused, layerNormFused, layerNormGradFused, nativeKernelsActive, softmaxFused, softmaxGradFused } from './kernels/native-ops.js';

const T2: [number, number] = [1, 0];

type GradFn = (...args: any[]) => { value: tf.Tensor; gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor | tf.Tensor[] };
/** tf.customGrad with typed arguments (its own signature takes a variadic Tensor | save union). */
const customGrad = (f: GradFn) => tf.customGrad(f as Parameters<typeof tf.customGrad>[0]);
const T3: [number, number, number] = [0, 2, 1];

/** y = x·W (+ b) for x [n, in], W [in, out], b [out]. */
export function dense(x: tf.Tensor2D, w: tf.Tensor2D, b?: tf.Tensor1D): tf.Tensor2D {
  return b ? denseBias(x, w, b) : denseNoBias(x, w);
}

/** dL/dx = dy·Wᵀ of a dense layer. */
function dxOfDense(dy: tf.Tensor2D, w: tf.Tensor2D): tf.Tensor2D {
  return nativeProductsActive() ? tf.matMul(dy, w, false, true) : tf.matMul(dy, tf.transpose(w, T2));
}

/** dL/dW = xᵀ·dy of a dense layer. */
function dwOfDense(x: tf.Tensor2D, dy: tf.Tensor2D): tf.Tensor2D {
  return nativeProductsActive() ? tf.matMul(x, dy, true, false) : tf.matMul(tf.transpose(x, T2), dy);
}

const denseNoBias = customGrad((x: tf.Tensor, w: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x, w]);
  return {
    value: tf.matMul(x as tf.Tensor2D, w as tf.Tensor2D),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
      tf.tidy(() => {
        const [xs, ws] = saved as tf.Tensor2D[];
        return [dxOfDense(dy as tf.Tensor2D, ws), dwOfDense(xs, dy as tf.Tensor2D)];
      }),
  };
}) as unknown as (x: tf.Tensor2D, w: tf.Tensor2D) => tf.Tensor2D;

const denseBias = customGrad((x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x, w]);
  const [x2, w2, b1] = [x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D];
  return {
    value: fusedDenseActive() ? denseBiasFused(x2, w2, b1) : tf.add(tf.matMul(x2, w2), b1),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
      tf.tidy(() => {
        const [xs, ws] = saved as tf.Tensor2D[];
        return [dxOfDense(dy as tf.Tensor2D, ws), dwOfDense(xs, dy as tf.Tensor2D), tf.sum(dy, 0)];
      }),
  };
}) as unknown as (x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D) => tf.Tensor2D;

/**
 * Batched product a [n, i, k] · b [n, k, j] (attention). On wasm these run on our SIMD kernel
 * (kernels/batch-matmul.ts) when installed, else on tfjs's scalar loop.
 */
export const bmm = customGrad((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
      tf.tidy(() => {
        const [as, bs] = saved as tf.Tensor3D[];
        const d = dy as tf.Tensor3D;
        // Our wasm kernel (kernels/bmm.c) and the native BLAS read transposed operands in place;
        // the stock kernels (and the cpu reference) get explicit transposes and plain products.
        if (wasmKernelsActive() || nativeProductsActive()) return [tf.matMul(d, bs, false, true), tf.matMul(as, d, true, false)];
        return [tf.matMul(d, tf.transpose(bs, T3)), tf.matMul(tf.transpose(as, T3), d)];
      }),
  };
}) as unknown as (a: tf.Tensor3D, b: tf.Tensor3D) => tf.Tensor3D;

/**
 * Multi-head self-attention of q, k, v [B·T, D] (the projections' outputs, H heads of D/H):
 * per image and head, softmax(q·kᵀ/√dh)·v, back in the same [B·T, D] layout. On the native
 * kernels one pass each way works on that layout directly; otherwise heads are split with rank-4
 * transposes and the products run batched.
 */
export function multiHeadAttention(q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, B: number, T: number, H: number): tf.Tensor2D {
  const D = q.shape[1];
  const dh = D / H;
  const scale = 1 / Math.sqrt(dh);
  if (nativeKernelsActive()) return attentionNative(q, k, v, { batch: B, tokens: T, heads: H, scale });
  const heads = (t: tf.Tensor2D, perm: number[], shape: [number, number, number]) => tf.reshape(tf.transpose(tf.reshape(t, [B, T, H, dh]), perm), shape) as tf.Tensor3D;
  const attn = attentionWeights(heads(q, [0, 2, 1, 3], [B * H, T, dh]), heads(k, [0, 2, 3, 1], [B * H, dh, T]), scale);
  const o = bmm(attn, heads(v, [0, 2, 1, 3], [B * H, T, dh]));
  return tf.reshape(tf.transpose(tf.reshape(o, [B, H, T, dh]), [0, 2, 1, 3]), [B * T, D]);
}

type AttentionAttrs = { batch: number; tokens: number; heads: number; scale: number };
const attentionNativeCache = new Map<string, (q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D) => tf.Tensor2D>();

/** The native attention pair under customGrad (kernels/native-ops.ts), one per shape; P is kept for the gradient. */
function attentionNative(q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, attrs: AttentionAttrs): tf.Tensor2D {
  const key = JSON.stringify(attrs);
  let f = attentionNativeCache.get(key);
  if (!f) {
    f = customGrad((q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, save: tf.GradSaveFunc) => {
      const [o, p] = attentionFused(q, k, v, attrs);
      save([q, k, v, p]);
      return {
        value: o,
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [qs, ks, vs, ps] = saved;
          return attentionGradFused(dy, qs, ks, vs, ps, attrs);
        },
      };
    }) as unknown as (q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D) => tf.Tensor2D;
    attentionNativeCache.set(key, f);
  }
  return f(q, k, v);
}

/**
 * The attention weights softmax(q·kᵀ·scale) for q [n, t, d] and kᵀ [n, d, t] (scale > 0). On the
 * native kernels the scale is applied inside one softmax pass (and its gradient); otherwise q is
 * scaled first and tfjs's softmax runs.
 */
export function attentionWeights(q: tf.Tensor3D, kT: tf.Tensor3D, scale: number): tf.Tensor3D {
  if (nativeKernelsActive()) return scaledSoftmaxFor(scale)(bmm(q, kT));
  return tf.softmax(bmm(tf.mul(q, scale) as tf.Tensor3D, kT));
}

const scaledSoftmaxCache = new Map<number, (x: tf.Tensor3D) => tf.Tensor3D>();
function scaledSoftmaxFor(scale: number): (x: tf.Tensor3D) => tf.Tensor3D {
  let f = scaledSoftmaxCache.get(scale);
  if (!f) {
    f = customGrad((x: tf.Tensor, save: tf.GradSaveFunc) => {
      const y = softmaxFused(x, scale);
      save([y]);
      // dx = scale·y·(dy − Σ dy·y) along the last axis
      return { value: y, gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => softmaxGradFused(saved[0], dy, scale) };
    }) as unknown as (x: tf.Tensor3D) => tf.Tensor3D;
    scaledSoftmaxCache.set(scale, f);
  }
  return f;
}

/** softmax(x·scale) along the last axis (exposed for its gradient test; the native kernel when active). */
export function scaledSoftmax(x: tf.Tensor3D, scale: number): tf.Tensor3D {
  return nativeKernelsActive() ? scaledSoftmaxFor(scale)(x) : tf.softmax(tf.mul(x, scale) as tf.Tensor3D);
}

/**
 * Standardise x [n, c] along `axis` (1: every row, LayerNorm; 0: every column, BatchNorm in
 * training mode), with the biased variance as PyTorch uses for normalising.
 */
function standardize(axis: 0 | 1, eps: number) {
  return customGrad((x: tf.Tensor, save: tf.GradSaveFunc) => {
    const { xhat, rstd } = tf.tidy(() => {
      const mean = tf.mean(x, axis, true);
      const centered = tf.sub(x, mean);
      const variance = tf.mean(tf.square(centered), axis, true);
      const r = tf.rsqrt(tf.add(variance, eps));
      return { xhat: tf.mul(centered, r), rstd: r };
    });
    save([xhat, rstd]);
    return {
      value: xhat,
      // dx = rstd · (dy − mean(dy) − x̂ · mean(dy · x̂)) along the normalised axis.
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [xh, r] = saved;
          const meanDy = tf.mean(dy, axis, true);
          const meanDyXhat = tf.mean(tf.mul(dy, xh), axis, true);
          return tf.mul(r, tf.sub(tf.sub(dy, meanDy), tf.mul(xh, meanDyXhat)));
        }),
    };
  }) as unknown as (x: tf.Tensor2D) => tf.Tensor2D;
}

const standardizeRows = new Map<number, (x: tf.Tensor2D) => tf.Tensor2D>();
const standardizeCols = new Map<number, (x: tf.Tensor2D) => tf.Tensor2D>();
function cached(cache: Map<number, (x: tf.Tensor2D) => tf.Tensor2D>, axis: 0 | 1, eps: number) {
  let f = cache.get(eps);
  if (!f) cache.set(eps, (f = standardize(axis, eps)));
  return f;
}

/** LayerNorm over the last axis of x [n, c] with weight/bias [c]. */
export function layerNorm(x: tf.Tensor2D, weight: tf.Tensor1D, bias: tf.Tensor1D, eps = 1e-6): tf.Tensor2D {
  if (nativeKernelsActive()) return layerNormNativeFor(eps)(x, weight, bias);
  return tf.add(tf.mul(cached(standardizeRows, 1, eps)(x), weight), bias);
}

/** The whole LayerNorm, affine included, as one native kernel each way (kernels/native-ops.ts). */
const layerNormNative = new Map<number, (x: tf.Tensor2D, w: tf.Tensor1D, b: tf.Tensor1D) => tf.Tensor2D>();
function layerNormNativeFor(eps: number) {
  let f = layerNormNative.get(eps);
  if (!f) {
    f = customGrad((x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
      const [y, mean, rstd] = layerNormFused(x, w, b, eps);
      save([x, w, mean, rstd]);
      return {
        value: y,
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [xs, ws, m, r] = saved;
          return layerNormGradFused(dy, xs, ws, m, r);
        },
      };
    }) as unknown as (x: tf.Tensor2D, w: tf.Tensor1D, b: tf.Tensor1D) => tf.Tensor2D;
    layerNormNative.set(eps, f);
  }
  return f;
}

/** The statistics-only part of LayerNorm (exposed for its gradient test). */
export function standardizeLastAxis(x: tf.Tensor2D, eps = 1e-6): tf.Tensor2D {
  return cached(standardizeRows, 1, eps)(x);
}

/**
 * BatchNorm1d in training mode over x [n, c]: batch statistics, affine when weight/bias are given
 * (the last BN of a MoCo v3 head has none). Running statistics are not kept: heads are only used
 * while training, where PyTorch uses batch statistics too.
 */
export function batchNormTrain(x: tf.Tensor2D, weight?: tf.Tensor1D, bias?: tf.Tensor1D, eps = 1e-5): tf.Tensor2D {
  const xhat = cached(standardizeCols, 0, eps)(x);
  return weight && bias ? tf.add(tf.mul(xhat, weight), bias) : xhat;
}

/** The statistics-only part of BatchNorm (exposed for its gradient test). */
export function standardizeFirstAxis(x: tf.Tensor2D, eps = 1e-5): tf.Tensor2D {
  return cached(standardizeCols, 0, eps)(x);
}

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** Exact GELU, x·Φ(x) with Φ via erf (not the tanh approximation), as PyTorch's default. */
export function gelu<T extends tf.Tensor>(x: T): T {
  return (wasmGeluActive() ? geluOnWasmKernel : geluComposed)(x);
}

/** The same on our fused wasm kernels (kernels/gelu.c): one pass forward, one backward. */
const geluOnWasmKernel = customGrad((x: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x]);
  return {
    value: geluFused(x),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => geluGradFused(saved[0], dy),
  };
}) as unknown as <T extends tf.Tensor>(x: T) => T;

const geluComposed = customGrad((x: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x]);
  return {
    value: tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, SQRT1_2))))),
    // d/dx x·Φ(x) = Φ(x) + x·φ(x)
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
      tf.tidy(() => {
        const [xs] = saved;
        const cdf = tf.mul(0.5, tf.add(1, tf.erf(tf.mul(xs, SQRT1_2))));
        const pdf = tf.mul(INV_SQRT_2PI, tf.exp(tf.mul(tf.square(xs), -0.5)));
        return tf.mul(dy, tf.add(cdf, tf.mul(xs, pdf)));
      }),
  };
}) as unknown as <T extends tf.Tensor>(x: T) => T;

/**
 * conv2d of x [n, h, w, ci] (already padded) with w [k, k, ci, co], stride s, no padding.
 * The filter gradient is itself a conv2d (dilated by the stride, batch and channels swapped),
 * because wasm has no Conv2DBackpropFilter kernel (DESIGN.md section 4).
 */
export function conv2dValid(x: tf.Tensor4D, w: tf.Tensor4D, stride: number): tf.Tensor4D {
  let f = conv2dCache.get(stride);
  if (!f) conv2dCache.set(stride, (f = makeConv2d(stride)));
  return f(x, w);
}
const conv2dCache = new Map<number, (x: tf.Tensor4D, w: tf.Tensor4D) => tf.Tensor4D>();

function makeConv2d(stride: number) {
  return customGrad((x: tf.Tensor, w: tf.Tensor, save: tf.GradSaveFunc) => {
    save([x, w]);
    return {
      value: tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, stride, 'valid'),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [xs, ws] = saved as tf.Tensor4D[];
          const dy4 = dy as tf.Tensor4D;
          const dx = convInputGrad(xs, ws, dy4, stride);
          return [dx, convFilterGrad(xs, dy4, ws.shape[0], stride)];
        }),
    };
  }) as unknown as (x: tf.Tensor4D, w: tf.Tensor4D) => tf.Tensor4D;
}

function convInputGrad(x: tf.Tensor4D, w: tf.Tensor4D, dy: tf.Tensor4D, stride: number): tf.Tensor4D {
  const [n, h, wd, ci] = x.shape;
  const k = w.shape[0];
  // conv2dTranspose yields the rows/columns the forward pass touched; rows it never read
  // (when (h − k) is not a multiple of the stride) get zero gradient.
  const usedH = (dy.shape[1] - 1) * stride + k;
  const usedW = (dy.shape[2] - 1) * stride + k;
  const dxUsed = tf.conv2dTranspose(dy, w, [n, usedH, usedW, ci], stride, 'valid');
  if (usedH === h && usedW === wd) return dxUsed;
  return tf.pad(dxUsed, [
    [0, 0],
    [0, h - usedH],
    [0, wd - usedW],
    [0, 0],
  ]);
}

function convFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, k: number, stride: number): tf.Tensor4D {
  // dW[a,b,ci,co] = Σ_{n,i,j} x[n, i·s+a, j·s+b, ci] · dy[n,i,j,co]: a conv of x (channels as the
  // batch) with dy (batch as input channels) as the filter, dilated by s.
  const xT = tf.transpose(x, [3, 1, 2, 0]);
  const dyT = tf.transpose(dy, [1, 2, 0, 3]);
  const full = tf.conv2d(xT, dyT, 1, 'valid', 'NHWC', stride);
  const cropped = full.shape[1] === k && full.shape[2] === k ? full : tf.slice(full, [0, 0, 0, 0], [-1, k, k, -1]);
  return tf.transpose(cropped, [1, 2, 0, 3]);
}
