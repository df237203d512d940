/**
 * Vision Transformer as in MoCo v3's vits.py (timm 0.4.9 VisionTransformer): pre-norm blocks,
 * LayerNorm eps 1e-6, exact GELU, qkv with bias, MLP ratio 4, 2-D sin-cos position embedding,
 * the reference initialisation, and the random (frozen) patch projection.
 *
 * Layout choices for speed on wasm (DESIGN.md section 4), none visible outside this file and the
 * export mapping: q, k and v are three projections (the fused qkv would need a split in the hot
 * path; the export concatenates them back to timm's `attn.qkv`); linear weights are stored
 * [in, out]; activations stay 2-D [batch·tokens, dim] between blocks (ops.ts's attention splits
 * heads itself); the class token is prepended by padding the input patches with a zero row, and
 * pooled by a masked sum, so no slice/concat/gather runs per step.
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from './config.js';
import { dense, gelu, layerNorm, multiHeadAttention } from './ops.js';
import type { ParamSet, Params } from './params.js';
import type { Prng } from './rng.js';

export const LN_EPS = 1e-6;

/**
 * The 2-D sin-cos position embedding of MoCo v3 (temperature 10000), [gridH·gridW, dim]: for the
 * patch at row r, column c: [sin(rω), cos(rω), sin(cω), cos(cω)], ω_d = 10000^(−d/(dim/4)).
 */
export function sincosPositionEmbedding(gridH: number, gridW: number, dim: number, temperature = 10000): Float32Array {
  if (dim % 4 !== 0) throw new RangeError('sin-cos position embedding needs dim divisible by 4');
  const d4 = dim / 4;
  const out = new Float32Array(gridH * gridW * dim);
  for (let r = 0; r < gridH; r++) {
    for (let c = 0; c < gridW; c++) {
      const base = (r * gridW + c) * dim;
      for (let d = 0; d < d4; d++) {
        const omega = 1 / Math.pow(temperature, d / d4);
        out[base + d] = Math.sin(r * omega);
        out[base + d4 + d] = Math.cos(r * omega);
        out[base + 2 * d4 + d] = Math.sin(c * omega);
        out[base + 3 * d4 + d] = Math.cos(c * omega);
      }
    }
  }
  return out;
}

export function vitTokens(c: ModelConfig): { grid: number; patches: number; tokens: number; hasCls: boolean } {
  const grid = c.imageSize / c.patch;
  const hasCls = c.pooling === 'cls';
  return { grid, patches: grid * grid, tokens: grid * grid + (hasCls ? 1 : 0), hasCls };
}

/** The reference initialisation (VisionTransformerMoCo.__init__), every draw from `rng`. */
export function initVit(c: ModelConfig, rng: Prng): ParamSet {
  const D = c.dim;
  const { grid, tokens, hasCls } = vitTokens(c);
  const p: Params = {};
  const frozen = new Set<string>();
  const u = (shape: number[], bound: number) => tf.tensor(rng.uniformArray(shape.reduce((a, b) => a * b, 1), -bound, bound), shape);
  const xavier = (fanIn: number, fanOut: number) => u([fanIn, fanOut], Math.sqrt(6 / (fanIn + fanOut)));

  // Patch projection: a conv with kernel = stride = patch, stored HWIO [p, p, 3, D].
  const patchIn = 3 * c.patch * c.patch;
  p['patch_embed.proj.weight'] = u([c.patch, c.patch, 3, D], Math.sqrt(6 / (patchIn + D)));
  p['patch_embed.proj.bias'] = tf.zeros([D]);
  if (c.freezePatchProjection) {
    frozen.add('patch_embed.proj.weight');
    frozen.add('patch_embed.proj.bias');
  }
  if (hasCls) p['cls_token'] = tf.tensor(rng.normalArray(D, 0, 1e-6), [1, 1, D]);
  if (c.posEmbed === 'sincos') {
    const pe = new Float32Array(tokens * D);
    pe.set(sincosPositionEmbedding(grid, grid, D), hasCls ? D : 0); // class-token slot stays zero
    p['pos_embed'] = tf.tensor(pe, [1, tokens, D]);
    frozen.add('pos_embed');
  } else if (c.posEmbed === 'learned') {
    p['pos_embed'] = tf.tensor(rng.truncNormalArray(tokens * D, 0, 0.02), [1, tokens, D]);
  }
  const qkvBound = Math.sqrt(6 / (D + D)); // xavier for Q, K and V separately: √(3/D)
  for (let i = 0; i < c.depth; i++) {
    const b = `blocks.${i}.`;
    p[b + 'norm1.weight'] = tf.ones([D]);
    p[b + 'norm1.bias'] = tf.zeros([D]);
    for (const w of ['q', 'k', 'v']) {
      p[`${b}attn.${w}.weight`] = u([D, D], qkvBound);
      p[`${b}attn.${w}.bias`] = tf.zeros([D]);
    }
    p[b + 'attn.proj.weight'] = xavier(D, D);
    p[b + 'attn.proj.bias'] = tf.zeros([D]);
    p[b + 'norm2.weight'] = tf.ones([D]);
    p[b + 'norm2.bias'] = tf.zeros([D]);
    p[b + 'mlp.fc1.weight'] = xavier(D, 4 * D);
    p[b + 'mlp.fc1.bias'] = tf.zeros([4 * D]);
    p[b + 'mlp.fc2.weight'] = xavier(4 * D, D);
    p[b + 'mlp.fc2.bias'] = tf.zeros([D]);
  }
  if (c.pooling !== 'gap_no_ln') {
    p['norm.weight'] = tf.ones([D]);
    p['norm.bias'] = tf.zeros([D]);
  }
  return { params: p, frozen };
}

/**
 * [B, S, S, 3] → [B·tokens, 3·p·p] patch vectors, flattened (row, column, channel) to match the
 * HWIO patch weight; with a class token, each image gets a leading all-zero row.
 */
export function patchify(x: tf.Tensor4D, c: ModelConfig): tf.Tensor2D {
  const [B, S] = x.shape;
  const p = c.patch;
  const g = S / p;
  const { hasCls } = vitTokens(c);
  const rows = tf.reshape(x, [B * g, p, g, p * 3]);
  const patches = tf.reshape(tf.transpose(rows, [0, 2, 1, 3]), [B, g * g, p * p * 3]);
  const withCls = hasCls ? tf.pad(patches, [[0, 0], [1, 0], [0, 0]]) : patches;
  return tf.reshape(withCls, [-1, p * p * 3]);
}

/** One pre-norm transformer block on x [B·T, D]. */
function block(p: Params, i: number, x: tf.Tensor2D, B: number, T: number, c: ModelConfig): tf.Tensor2D {
  const b = `blocks.${i}.`;
  const w = (n: string) => p[b + n] as tf.Tensor2D;
  const v1 = (n: string) => p[b + n] as tf.Tensor1D;

  const h = layerNorm(x, v1('norm1.weight'), v1('norm1.bias'), LN_EPS);
  const q = dense(h, w('attn.q.weight'), v1('attn.q.bias'));
  const k = dense(h, w('attn.k.weight'), v1('attn.k.bias'));
  const v = dense(h, w('attn.v.weight'), v1('attn.v.bias'));
  const o = multiHeadAttention(q, k, v, B, T, c.heads); // per head: softmax(q·kᵀ/√dh)·v
  const x1 = tf.add(x, dense(o, w('attn.proj.weight'), v1('attn.proj.bias'))) as tf.Tensor2D;

  const h2 = layerNorm(x1, v1('norm2.weight'), v1('norm2.bias'), LN_EPS);
  const mlp = dense(gelu(dense(h2, w('mlp.fc1.weight'), v1('mlp.fc1.bias'))), w('mlp.fc2.weight'), v1('mlp.fc2.bias'));
  return tf.add(x1, mlp) as tf.Tensor2D;
}

/**
 * The backbone: images [B, S, S, 3] (normalised) → features [B, D] (class token after the final
 * LayerNorm; or the average of patch tokens with / without that LayerNorm).
 */
export function vitForward(p: Params, images: tf.Tensor4D, c: ModelConfig, lastBlocks = 1): tf.Tensor2D {
  const B = images.shape[0];
  const D = c.dim;
  const { tokens: T, hasCls } = vitTokens(c);
  const patchW = tf.reshape(p['patch_embed.proj.weight'], [-1, D]) as tf.Tensor2D;
  const embedded = dense(patchify(images, c), patchW); // the class-token rows are 0 here

  // Per-token additive term [T, D]: patch bias on patch rows, class token on row 0, position.
  let perToken: tf.Tensor = p['patch_embed.proj.bias'];
  if (hasCls) {
    const isPatch = tf.tensor2d(Array.from({ length: T }, (_, t) => (t === 0 ? 0 : 1)), [T, 1]);
    const isCls = tf.sub(1, isPatch);
    perToken = tf.add(tf.mul(isPatch, perToken), tf.mul(isCls, tf.reshape(p['cls_token'], [1, D])));
  }
  if (p['pos_embed']) perToken = tf.add(perToken, tf.reshape(p['pos_embed'], [T, D]));
  let x = tf.reshape(tf.add(tf.reshape(embedded, [B, T, D]), perToken), [B * T, D]) as tf.Tensor2D;

  // Readout of several blocks (DINO's linear evaluation, n = 4): the class token of each of the last
  // n blocks' outputs, each through the final LayerNorm, concatenated (last block first).
  const readFrom = c.pooling === 'cls' ? Math.max(1, Math.min(lastBlocks, c.depth)) : 1;
  const outputs: tf.Tensor2D[] = [];
  for (let i = 0; i < c.depth; i++) {
    x = block(p, i, x, B, T, c);
    if (i >= c.depth - readFrom) outputs.unshift(x);
  }

  if (c.pooling === 'cls') {
    // LayerNorm acts per token, so normalising only the class token equals slicing after LN.
    const selectCls = tf.tensor3d(Array.from({ length: T }, (_, t) => (t === 0 ? 1 : 0)), [1, T, 1]);
    const clsOf = (y: tf.Tensor2D) =>
      layerNorm(tf.sum(tf.mul(tf.reshape(y, [B, T, D]), selectCls), 1) as tf.Tensor2D, p['norm.weight'] as tf.Tensor1D, p['norm.bias'] as tf.Tensor1D, LN_EPS);
    return outputs.length === 1 ? clsOf(outputs[0]) : (tf.concat(outputs.map(clsOf), 1) as tf.Tensor2D);
  }
  if (c.pooling === 'gap') x = layerNorm(x, p['norm.weight'] as tf.Tensor1D, p['norm.bias'] as tf.Tensor1D, LN_EPS);
  return tf.mean(tf.reshape(x, [B, T, D]), 1) as tf.Tensor2D;
}
