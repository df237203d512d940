/**
 * Benchmark: one full MoCo v3 training step (momentum update, keys of both views, queries
 * forward + backward, AdamW) per backend, against the PyTorch baseline run in the same script
 * (/work/shared/baselines/pytorch_moco_step.py, same shapes, fixed random views: no augmentation
 * cost on either side).
 *
 *   npm run bench:trainer                                   # wasm, ViT 32×32/4, D192, depth 6, B64
 *   npm run bench:trainer -- --backends cpu,wasm --dim 64 --depth 2 --batch 16 --steps 3
 *   npm run bench:trainer -- --no-torch                     # skip the PyTorch side
 *   npm run bench:trainer -- --kernels on                   # only our wasm kernels (default: off,on)
 *   npm run bench:trainer -- --kernels off,bmm,on           # stock / our BatchMatMul only / all ours
 *   npm run bench:trainer -- --wasm-threads 2               # only 2 wasm threads (default: 1,2)
 *
 * Kernel settings share one process (our BatchMatMul switches at run time); each wasm thread
 * count needs its own process (fixed when the backend starts), run one after the other.
 *
 * The tfjs `cpu` backend takes minutes per step at the default size: pass it only with small
 * shapes. Prints median ms/step, images/s, peak process RSS, the wasm heap and tf.memory(), and
 * the ratio to PyTorch (or to the reported 3.1 s when torch is unavailable).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { selectBackend, type BackendPreference } from '../runner/moco/backend.js';
import { setWasmKernelsEnabled } from '../runner/moco/kernels/batch-matmul.js';
import { disposeParams } from '../runner/moco/params.js';
import { benchmarkStep } from './benchmarkStep.js';

/** The shape of DESIGN.md's measurements (and of the baseline script's defaults). */
const DEFAULT_SHAPE = { dim: '192', depth: '6', heads: '3', batch: '64', hidden: '1024', out: '256' };

const { values: a } = parseArgs({
  options: {
    backends: { type: 'string', default: 'wasm' },
    dim: { type: 'string', default: DEFAULT_SHAPE.dim },
    depth: { type: 'string', default: DEFAULT_SHAPE.depth },
    heads: { type: 'string', default: DEFAULT_SHAPE.heads },
    batch: { type: 'string', default: DEFAULT_SHAPE.batch },
    'micro-batch': { type: 'string' },
    hidden: { type: 'string', default: DEFAULT_SHAPE.hidden },
    out: { type: 'string', default: DEFAULT_SHAPE.out },
    steps: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '1' },
    threads: { type: 'string', default: '2' },
    kernels: { type: 'string', default: 'off,on' },
    'wasm-threads': { type: 'string', default: '1,2' },
    'rows-json': { type: 'string' },
    'no-torch': { type: 'boolean', default: false },
  },
});
const n = (k: keyof typeof a) => Number(a[k]);
const REPORTED_TORCH_MS = 3100; // DESIGN.md section 4: PyTorch 1.13 + OpenBLAS on 2 cores, default shape
const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[Math.floor((xs.length - 1) / 2)];
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

interface Row {
  backend: string;
  medianMs: number;
  imagesPerSec: number;
  peakRss: number;
  wasmHeap: number | null;
  tfBytes: number;
  loss: number;
}

type KernelSetting = 'off' | 'bmm' | 'on';

async function benchTfjs(pref: BackendPreference, kernels: KernelSetting): Promise<Row> {
  const info = await selectBackend(pref);
  setWasmKernelsEnabled(kernels !== 'off', kernels === 'on');
  const kernelLabel = info.backend !== 'wasm' ? '' : kernels === 'on' ? `, kernels ${info.kernels}` : kernels === 'bmm' ? ', kernels bmm only' : ', stock kernels';
  const B = n('batch');
  const bench = benchmarkStep({
    dim: n('dim'),
    depth: n('depth'),
    heads: n('heads'),
    batch: B,
    hidden: n('hidden'),
    out: n('out'),
    microBatch: a['micro-batch'] ? Number(a['micro-batch']) : undefined,
  });
  const times: number[] = [];
  let peakRss = process.memoryUsage().rss;
  let loss = NaN;
  const total = n('warmup') + n('steps');
  for (let i = 0; i < total; i++) {
    const t0 = performance.now();
    loss = bench.step(i).loss;
    const ms = performance.now() - t0;
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
    process.stderr.write(`  ${info.backend}${kernelLabel} step ${i}${i < n('warmup') ? ' (warmup)' : ''}: ${ms.toFixed(0)} ms loss ${loss.toFixed(4)}\n`);
    if (i >= n('warmup')) times.push(ms);
  }
  const heap = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm?.HEAPU8?.byteLength ?? null;
  const tfBytes = tf.memory().numBytes;
  bench.dispose();
  disposeParams(bench.model.query);
  disposeParams(bench.model.momentum);
  bench.optimizer.dispose();
  const medianMs = median(times);
  return { backend: `tfjs-${info.backend} (${info.device}, ${info.threads} thr${kernelLabel})`, medianMs, imagesPerSec: (B * 1000) / medianMs, peakRss, wasmHeap: heap, tfBytes, loss };
}

/** This benchmark in a child process with one wasm thread count; returns its rows. */
function runChild(threads: string): Row[] {
  const json = join(mkdtempSync(join(tmpdir(), 'moco-bench-')), 'rows.json');
  const args = process.argv.slice(2).filter((x, i, all) => !['--wasm-threads', '--rows-json'].includes(x) && !['--wasm-threads', '--rows-json'].includes(all[i - 1]));
  const r = spawnSync(process.execPath, [...process.execArgv, process.argv[1], ...args, '--wasm-threads', threads, '--rows-json', json, '--no-torch'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  if (r.status !== 0 || !existsSync(json)) throw new Error(`benchmark child (--wasm-threads ${threads}) exited ${r.status}`);
  return JSON.parse(readFileSync(json, 'utf8')) as Row[];
}

function benchTorch(): { medianMs: number; imagesPerSec: number; label: string } | string {
  const script = '/work/shared/baselines/pytorch_moco_step.py';
  const python = '/usr/bin/python3';
  const blas = '/usr/lib/x86_64-linux-gnu/openblas-pthread';
  if (!existsSync(script) || !existsSync(python)) return 'baseline script or /usr/bin/python3 missing';
  const json = join(mkdtempSync(join(tmpdir(), 'moco-bench-')), 'torch.json');
  const args = [script, '--dim', a.dim!, '--depth', a.depth!, '--heads', a.heads!, '--batch', a.batch!, '--mlp-hidden', a.hidden!, '--out', a.out!];
  args.push('--steps', a.steps!, '--warmup', a.warmup!, '--threads', a.threads!, '--json', json);
  const r = spawnSync(python, args, { env: { ...process.env, LD_LIBRARY_PATH: blas }, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0 || !existsSync(json)) return `python3 exited ${r.status} (apt-get install -y python3-torch libopenblas0-pthread)`;
  const res = JSON.parse(readFileSync(json, 'utf8')) as { medianMs: number; imagesPerSec: number; backend: string; threads: number };
  return { medianMs: res.medianMs, imagesPerSec: res.imagesPerSec, label: `${res.backend}, ${res.threads} threads` };
}

async function main() {
  const shape = `ViT 32×32/4 D${a.dim} depth ${a.depth} heads ${a.heads}, batch ${a.batch}, heads hidden ${a.hidden} out ${a.out}`;
  process.stderr.write(`one MoCo v3 step: ${shape}\n`);
  const rows: Row[] = [];
  const threadCounts = a['wasm-threads']!.split(',').map((t) => t.trim());
  if (threadCounts.length > 1) {
    for (const t of threadCounts) rows.push(...runChild(t));
  } else {
    process.env.MOCO_WASM_THREADS = threadCounts[0];
    // Every backend × kernel setting in this one process, so the ratios compare like with like.
    const kernelSettings = a.kernels!.split(',').map((k) => k.trim() as KernelSetting);
    for (const b of a.backends!.split(',')) {
      for (const k of b.trim() === 'wasm' ? kernelSettings : (['off'] as const)) rows.push(await benchTfjs(b.trim() as BackendPreference, k));
    }
    if (a['rows-json']) return writeFileSync(a['rows-json'], JSON.stringify(rows));
  }
  const torch = a['no-torch'] ? 'skipped (--no-torch)' : benchTorch();
  // The reported figure is for the default shape only: at another shape there is nothing to compare.
  const defaultShape = (Object.keys(DEFAULT_SHAPE) as (keyof typeof DEFAULT_SHAPE)[]).every((k) => a[k] === DEFAULT_SHAPE[k]);
  const torchMs = typeof torch !== 'string' ? torch.medianMs : defaultShape ? REPORTED_TORCH_MS : NaN;
  const torchLabel =
    typeof torch !== 'string'
      ? `measured in this run (${torch.label})`
      : defaultShape
        ? `reported ${REPORTED_TORCH_MS} ms (DESIGN.md; not run here: ${torch})`
        : `not run (${torch}); the reported ${REPORTED_TORCH_MS} ms is for the default shape only`;
  console.log(`\n${shape}`);
  console.log('| backend | median ms/step | images/s | peak RSS | wasm heap | tf.memory | speed-up vs first row | time ÷ PyTorch |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const speedup = `${(rows[0].medianMs / r.medianMs).toFixed(2)}×`;
    console.log(`| ${r.backend} | ${r.medianMs.toFixed(0)} | ${r.imagesPerSec.toFixed(2)} | ${mib(r.peakRss)} | ${r.wasmHeap === null ? '–' : mib(r.wasmHeap)} | ${mib(r.tfBytes)} | ${speedup} | ${Number.isNaN(torchMs) ? '–' : `${(r.medianMs / torchMs).toFixed(2)}×`} |`);
  }
  if (typeof torch !== 'string') console.log(`| pytorch | ${torch.medianMs.toFixed(0)} | ${torch.imagesPerSec.toFixed(2)} | – | – | – | – | 1× |`);
  console.log(`load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log(`PyTorch: ${torchLabel}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
