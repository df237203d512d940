/**
 * Profile of one MoCo v3 training step: wall time per tfjs kernel (tf.profile), grouped by kernel
 * name, with batched/transposed matMuls split out because they take different code paths on the
 * wasm backend (DESIGN.md section 4).
 *
 *   npx tsx bench/trainer-profile.ts                      # benchmark's default shape, wasm, all our kernels
 *   npx tsx bench/trainer-profile.ts --shape small        # the small-image shape (28 px, patch 7, dim 64 …)
 *   npx tsx bench/trainer-profile.ts --depth 2 --kernels off     # stock tfjs kernels only
 *   npx tsx bench/trainer-profile.ts --kernels blas               # without the native elementwise kernels (wasm: ours without BLAS)
 */
import * as tf from '@tensorflow/tfjs';
import { parseCommandLineOrExit } from '../common/commandLine.js';
import { selectBackend } from '../runner/moco/backend.js';
import { setWasmKernelsEnabled } from '../runner/moco/kernels/batch-matmul.js';
import { BENCHMARK_SHAPES, benchmarkStep, SHAPE_OPTIONS, withShapeOptions } from './benchmarkStep.js';

const USAGE = `npx tsx bench/trainer-profile.ts [--shape default|small] [--img N --patch N --dim N --depth N --heads N --batch N --hidden N --out N] [--backend wasm] [--kernels off|wasm|blas|on] [--top 25]`;
const { values: a } = parseCommandLineOrExit(USAGE, {
  backend: { type: 'string', default: 'wasm' },
  shape: { type: 'string', default: 'default' },
  ...SHAPE_OPTIONS,
  top: { type: 'string', default: '25' },
  kernels: { type: 'string', default: 'on' },
});
const n = (k: keyof typeof a) => Number(a[k]);

function kernelKey(k: { name: string; inputShapes: number[][] }): string {
  if (k.name !== 'BatchMatMul' && k.name !== '_FusedMatMul') return k.name;
  const [as, bs] = k.inputShapes;
  return `${k.name} ${as.length > 2 && as[0] > 1 ? '3-D' : '2-D'} ${JSON.stringify(as)}x${JSON.stringify(bs)}`;
}

async function main() {
  const info = await selectBackend(a.backend as 'wasm');
  const k = a.kernels as 'off' | 'bmm' | 'wasm' | 'blas' | 'on';
  setWasmKernelsEnabled(k !== 'off', k !== 'off' && k !== 'bmm', k === 'blas' || k === 'on', k === 'on');
  const base = BENCHMARK_SHAPES[a.shape as keyof typeof BENCHMARK_SHAPES];
  if (!base) throw new Error(`unknown --shape ${a.shape}`);
  const shape = withShapeOptions(base, a);
  const { step } = benchmarkStep(shape);
  step(0); // warm-up
  const t0 = performance.now();
  const prof = await tf.profile(() => {
    step(1);
  });
  const wall = performance.now() - t0;
  const byKey = new Map<string, { ms: number; count: number }>();
  let kernelTotal = 0;
  for (const k of prof.kernels) {
    // customGrad's forward and gradient appear as pseudo-kernels ('forward', 'unnamed scope')
    // whose time includes the real kernels they ran: count only registered kernels.
    if (!tf.getKernel(k.name, tf.getBackend())) continue;
    const ms = Number(await k.kernelTimeMs) || 0;
    kernelTotal += ms;
    const e = byKey.get(kernelKey(k)) ?? { ms: 0, count: 0 };
    e.ms += ms;
    e.count++;
    byKey.set(kernelKey(k), e);
  }
  const rows = [...byKey.entries()].sort((p, q) => q[1].ms - p[1].ms);
  console.log(`${info.backend} (${info.device}, ${info.threads} thr, kernels ${a.kernels === 'on' ? info.kernels : a.kernels}) ${a.shape} shape, ${JSON.stringify(shape)}: step wall ${wall.toFixed(0)} ms (profiled), kernels ${kernelTotal.toFixed(0)} ms`);
  console.log('| kernel | calls | ms | share |\n|---|---|---|---|');
  for (const [key, e] of rows.slice(0, n('top'))) console.log(`| ${key} | ${e.count} | ${e.ms.toFixed(0)} | ${((100 * e.ms) / kernelTotal).toFixed(1)}% |`);
  const group = (pred: (k: string) => boolean) => rows.filter(([k]) => pred(k)).reduce((s, [, e]) => s + e.ms, 0);
  const mm3 = group((k) => k.includes('3-D'));
  const mm2 = group((k) => k.includes('2-D'));
  console.log(`3-D (batched) matMul ${mm3.toFixed(0)} ms (${((100 * mm3) / kernelTotal).toFixed(1)}%), 2-D matMul ${mm2.toFixed(0)} ms (${((100 * mm2) / kernelTotal).toFixed(1)}%)`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
