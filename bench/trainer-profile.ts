/**
 * Profile of one MoCo v3 training step: wall time per tfjs kernel (tf.profile), grouped by kernel
 * name, with batched/transposed matMuls split out because they take different code paths on the
 * wasm backend (DESIGN.md section 4).
 *
 *   npx tsx bench/trainer-profile.ts                      # benchmark shape, wasm
 *   npx tsx bench/trainer-profile.ts --depth 2 --kernels off     # stock tfjs kernels only
 */
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../runner/moco/backend.js';
import { setWasmKernelsEnabled } from '../runner/moco/kernels/batch-matmul.js';
import { benchmarkStep } from './benchmarkStep.js';

const { values: a } = parseArgs({
  options: {
    backend: { type: 'string', default: 'wasm' },
    dim: { type: 'string', default: '192' },
    depth: { type: 'string', default: '6' },
    heads: { type: 'string', default: '3' },
    batch: { type: 'string', default: '64' },
    hidden: { type: 'string', default: '1024' },
    out: { type: 'string', default: '256' },
    top: { type: 'string', default: '25' },
    kernels: { type: 'string', default: 'on' },
  },
});
const n = (k: keyof typeof a) => Number(a[k]);

function kernelKey(k: { name: string; inputShapes: number[][] }): string {
  if (k.name !== 'BatchMatMul' && k.name !== '_FusedMatMul') return k.name;
  const [as, bs] = k.inputShapes;
  return `${k.name} ${as.length > 2 && as[0] > 1 ? '3-D' : '2-D'} ${JSON.stringify(as)}x${JSON.stringify(bs)}`;
}

async function main() {
  const info = await selectBackend(a.backend as 'wasm');
  setWasmKernelsEnabled(a.kernels === 'on');
  const B = n('batch');
  const { step } = benchmarkStep({ dim: n('dim'), depth: n('depth'), heads: n('heads'), batch: B, hidden: n('hidden'), out: n('out') });
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
  console.log(`${info.backend} (${info.device}, ${info.threads} thr, kernels ${a.kernels === 'on' ? info.kernels : 'stock'}) D${a.dim} depth ${a.depth} B${B}: step wall ${wall.toFixed(0)} ms (profiled), kernels ${kernelTotal.toFixed(0)} ms`);
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
