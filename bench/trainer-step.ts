/**
 * Benchmark: one full MoCo v3 training step (momentum update, keys of both views, queries
 * forward + backward, AdamW) on tfjs, side by side with the PyTorch baseline
 * (../shared/baselines/pytorch_moco_step.py, from the repository root; same shapes, fixed random
 * views: no augmentation cost on either side), for two shapes by default:
 *
 *   default  ViT 32 px / patch 4, dim 192, depth 6, heads 3, batch 64, heads hidden 1024 → 256
 *   small    ViT 28 px / patch 7, dim 64, depth 4, heads 4, batch 256, heads hidden 512 → 128
 *
 *   npm run bench:trainer                                  # both shapes, native path, vs PyTorch
 *   npm run bench:trainer -- --shapes small --rounds 3     # one shape, three interleaved rounds
 *   npm run bench:trainer -- --kernels off,wasm,blas,on    # stock / our wasm kernels / + native BLAS / + native elementwise
 *   npm run bench:trainer -- --img 32 --patch 4 --dim 64 --depth 2 --batch 16   # a custom shape
 *   npm run bench:trainer -- --backends cpu,wasm --dim 64 --depth 2 --heads 2 --batch 16 --hidden 256
 *   npm run bench:trainer -- --wasm-threads 1,2            # wasm pool sizes (default: the backend's choice)
 *   npm run bench:trainer -- --no-torch                    # skip the PyTorch side
 *
 * Kernel settings (`off`: stock tfjs kernels; `bmm`: our wasm batched matMul; `wasm`: + fused
 * GELU; `blas`: + the native BLAS products where it loads; `on`: + the native elementwise kernels
 * (LayerNorm, softmax, GELU) and the bias added inside the product) share one process per shape
 * (they switch at run time; their steps alternate, A B B A …, each setting on its own model).
 * Every measurement is its own process, so peak RSS is per process (all its settings' models),
 * and the rounds interleave tfjs and PyTorch (tfjs, PyTorch, tfjs, PyTorch …) so that load from other processes
 * falls on both sides alike: on a shared machine only the ratio of one run means anything. The
 * load average is printed with every figure.
 *
 * Prints, per shape: median ms/step over all rounds, the fastest step (on a loaded machine, the
 * nearest to an idle one's), the median CPU time per step of the tfjs
 * process (all its threads: less sensitive to other processes' load than wall time), images/s, images/s per core (per thread the
 * run computes with, at most the cores there are), peak RSS, and time ÷ PyTorch's.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { parseCommandLineOrExit } from '../common/commandLine.js';
import { selectBackend, type BackendPreference } from '../runner/moco/backend.js';
import { setWasmKernelsEnabled } from '../runner/moco/kernels/batch-matmul.js';
import { disposeParams } from '../runner/moco/params.js';
import { BENCHMARK_SHAPES, benchmarkStep, SHAPE_KEYS, SHAPE_OPTIONS, withShapeOptions, type BenchmarkShape } from './benchmarkStep.js';

const USAGE = `npm run bench:trainer -- [--shapes default,small] [--img N --patch N --dim N --depth N --heads N --batch N --hidden N --out N] [--backends wasm] [--kernels off,wasm,blas,on] [--wasm-threads 1,2] [--threads N] [--rounds 2] [--steps 3] [--warmup 1] [--micro-batch N] [--no-torch]   (examples: the header of bench/trainer-step.ts, BENCHMARKS.md)`;
const { values: a } = parseCommandLineOrExit(USAGE, {
  shapes: { type: 'string', default: 'default,small' },
  ...SHAPE_OPTIONS,
  backends: { type: 'string', default: 'wasm' },
  'micro-batch': { type: 'string' },
  steps: { type: 'string', default: '3' },
  warmup: { type: 'string', default: '1' },
  rounds: { type: 'string', default: '2' },
  threads: { type: 'string', default: String(availableParallelism()) },
  kernels: { type: 'string', default: 'on' },
  'wasm-threads': { type: 'string', default: '' },
  // Internal: run one measurement in this process and write its rows here.
  'child-shape': { type: 'string' },
  'rows-json': { type: 'string' },
  'no-torch': { type: 'boolean', default: false },
});
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BASELINE = join(ROOT, '..', 'shared', 'baselines', 'pytorch_moco_step.py');
const PYTHON = '/usr/bin/python3'; // Debian's, the one python3-torch is installed for
const REPORTED_TORCH_MS = 3100; // DESIGN.md section 4: PyTorch 1.13 + OpenBLAS on 2 cores, default shape
const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[Math.floor((xs.length - 1) / 2)];
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const load = () => loadavg()[0].toFixed(2);
const CORES = availableParallelism();

interface Row {
  label: string;
  times: number[];
  /** CPU time (user + system, every thread of the process) per measured step, ms; tfjs only. */
  cpuTimes?: number[];
  batch: number;
  /** Threads it computes with (cores it can use). */
  threads: number;
  peakRss: number;
  wasmHeap: number | null;
  loss: number;
  load: string[];
}

type KernelSetting = 'off' | 'bmm' | 'wasm' | 'blas' | 'on';

function shapeLabel(s: BenchmarkShape): string {
  return `ViT ${s.img} px / patch ${s.patch}, dim ${s.dim}, depth ${s.depth}, heads ${s.heads}, batch ${s.batch}, heads hidden ${s.hidden} → ${s.out}`;
}

/** The shapes asked for: --shapes names, or one custom shape when any shape option is given. */
function shapesAsked(): [string, BenchmarkShape][] {
  if (SHAPE_KEYS.some((k) => a[k] !== undefined)) {
    return [['custom', withShapeOptions(BENCHMARK_SHAPES.default, a)]];
  }
  return a.shapes!.split(',').map((name) => {
    const s = BENCHMARK_SHAPES[name.trim() as keyof typeof BENCHMARK_SHAPES];
    if (!s) throw new Error(`unknown shape ${name} (known: ${Object.keys(BENCHMARK_SHAPES).join(', ')})`);
    return [name.trim(), s];
  });
}

// ---------------------------------------------------------------- one measurement (child process)

/** setWasmKernelsEnabled's switches for a setting. */
function applyKernels(k: KernelSetting): void {
  setWasmKernelsEnabled(k !== 'off', k !== 'off' && k !== 'bmm', k === 'blas' || k === 'on', k === 'on');
}

/**
 * The settings of one backend in this process, step by step in turn (A B, B A, A B …, each on its
 * own model from the same seed), so that load from other processes falls on all of them alike.
 * Peak RSS is the process's, with every setting's model in it.
 */
async function benchTfjs(shape: BenchmarkShape, pref: BackendPreference, settings: KernelSetting[]): Promise<Row[]> {
  const info = await selectBackend(pref);
  const blas = typeof info.blas === 'string' ? null : info.blas;
  const runs = settings.map((kernels) => {
    const kernelLabel =
      info.backend !== 'wasm'
        ? ''
        : { off: ', stock kernels', bmm: ', our bmm only', wasm: ', our wasm kernels', blas: `, wasm kernels + BLAS${blas ? ` (${blas.threads} BLAS thr)` : ''}`, on: `, kernels ${info.kernels}${blas ? ` (${blas.threads} BLAS thr)` : ''}` }[kernels];
    const bench = benchmarkStep({ ...shape, microBatch: a['micro-batch'] ? Number(a['micro-batch']) : undefined });
    return { kernels, kernelLabel, bench, times: [] as number[], cpuTimes: [] as number[], loss: NaN };
  });
  let peakRss = process.memoryUsage().rss;
  const total = Number(a.warmup) + Number(a.steps);
  for (let i = 0; i < total; i++) {
    for (const run of i % 2 === 0 ? runs : [...runs].reverse()) {
      applyKernels(run.kernels);
      const t0 = performance.now();
      const cpu0 = process.cpuUsage();
      run.loss = run.bench.step(i).loss;
      const ms = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      const cpuMs = (cpu.user + cpu.system) / 1000;
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
      process.stderr.write(`  ${info.backend}${run.kernelLabel} step ${i}${i < Number(a.warmup) ? ' (warmup)' : ''}: ${ms.toFixed(0)} ms (CPU ${cpuMs.toFixed(0)} ms) loss ${run.loss.toFixed(4)} (load ${load()})\n`);
      if (i >= Number(a.warmup)) {
        run.times.push(ms);
        run.cpuTimes.push(cpuMs);
      }
    }
  }
  const heap = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm?.HEAPU8?.byteLength ?? null;
  return runs.map((run) => {
    run.bench.dispose();
    disposeParams(run.bench.model.query);
    disposeParams(run.bench.model.momentum);
    run.bench.optimizer.dispose();
    const threads = Math.min(CORES, Math.max(info.threads, blas && (run.kernels === 'on' || run.kernels === 'blas') ? blas.threads : 1));
    return { label: `tfjs-${info.backend} (${info.threads} wasm thr${run.kernelLabel})`, times: run.times, cpuTimes: run.cpuTimes, batch: shape.batch, threads, peakRss, wasmHeap: heap, loss: run.loss, load: [load()] };
  });
}

async function childMain(): Promise<void> {
  const shape = JSON.parse(a['child-shape']!) as BenchmarkShape;
  const rows: Row[] = [];
  for (const b of a.backends!.split(',')) {
    const settings = b.trim() === 'wasm' ? a.kernels!.split(',').map((k) => k.trim() as KernelSetting) : (['off'] as KernelSetting[]);
    rows.push(...(await benchTfjs(shape, b.trim() as BackendPreference, settings)));
  }
  writeFileSync(a['rows-json']!, JSON.stringify(rows));
}

// ---------------------------------------------------------------- the comparison (parent process)

/** One tfjs measurement of a shape in its own process (one wasm pool size); its rows. */
function runTfjs(shape: BenchmarkShape, wasmThreads: string): Row[] {
  const json = join(mkdtempSync(join(tmpdir(), 'moco-bench-')), 'rows.json');
  const pass = ['--backends', a.backends!, '--kernels', a.kernels!, '--steps', a.steps!, '--warmup', a.warmup!, ...(a['micro-batch'] ? ['--micro-batch', a['micro-batch']] : [])];
  const env = { ...process.env, ...(wasmThreads ? { MOCO_WASM_THREADS: wasmThreads } : {}) };
  const r = spawnSync(process.execPath, [...process.execArgv, process.argv[1], ...pass, '--child-shape', JSON.stringify(shape), '--rows-json', json], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env,
  });
  if (r.status !== 0 || !existsSync(json)) throw new Error(`benchmark child exited ${r.status}`);
  return JSON.parse(readFileSync(json, 'utf8')) as Row[];
}

/** PyTorch's side of a shape (one process), or why it did not run. */
function runTorch(shape: BenchmarkShape): Row | string {
  if (!existsSync(BASELINE)) return `no baseline script at ${BASELINE}`;
  if (!existsSync(PYTHON)) return `${PYTHON} missing`;
  const json = join(mkdtempSync(join(tmpdir(), 'moco-bench-')), 'torch.json');
  const args = ['--img', shape.img, '--patch', shape.patch, '--dim', shape.dim, '--depth', shape.depth, '--heads', shape.heads, '--batch', shape.batch, '--mlp-hidden', shape.hidden, '--out', shape.out];
  args.push('--steps', a.steps!, '--warmup', a.warmup!, '--threads', a.threads!, '--json', json);
  // Runs the script unchanged and adds its peak RSS (ru_maxrss, KiB) to its JSON.
  const wrapper = [
    'import json, resource, runpy, sys',
    'sys.argv = sys.argv[1:]',
    'runpy.run_path(sys.argv[0], run_name="__main__")',
    'out = sys.argv[sys.argv.index("--json") + 1]',
    'res = json.load(open(out)); res["peakRssKiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss',
    'json.dump(res, open(out, "w"))',
  ].join('\n');
  // Debian's torch finds OpenBLAS through libblas.so.3: point it at the pthread variant's folder.
  const blasDir = `/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu/openblas-pthread`;
  const r = spawnSync(PYTHON, ['-c', wrapper, BASELINE, ...args.map(String)], { env: { ...process.env, LD_LIBRARY_PATH: blasDir }, stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0 || !existsSync(json)) return `python3 exited ${r.status} (apt-get install -y python3-torch libopenblas0-pthread)`;
  const res = JSON.parse(readFileSync(json, 'utf8')) as { steps: { ms: number; loss: number }[]; backend: string; threads: number; peakRssKiB: number };
  return {
    label: `${res.backend} (${res.threads} thr)`,
    times: res.steps.map((s) => s.ms),
    batch: shape.batch,
    threads: Math.min(CORES, res.threads),
    peakRss: res.peakRssKiB * 1024,
    wasmHeap: null,
    loss: res.steps[res.steps.length - 1]?.loss ?? NaN,
    load: [load()],
  };
}

/** Rows of the same label across rounds, merged: every step time kept, peaks maxed. */
function merge(rows: Row[]): Row[] {
  const byLabel = new Map<string, Row>();
  for (const r of rows) {
    const m = byLabel.get(r.label);
    if (!m) byLabel.set(r.label, { ...r, times: [...r.times], cpuTimes: r.cpuTimes && [...r.cpuTimes], load: [...r.load] });
    else {
      m.times.push(...r.times);
      m.cpuTimes?.push(...(r.cpuTimes ?? []));
      m.peakRss = Math.max(m.peakRss, r.peakRss);
      m.load.push(...r.load);
    }
  }
  return [...byLabel.values()];
}

async function main() {
  if (a['child-shape']) return childMain();
  const shapes = shapesAsked();
  const wasmThreads = a['wasm-threads'] ? a['wasm-threads'].split(',').map((t) => t.trim()) : [''];
  const rounds = Number(a.rounds);
  console.log(`load average at the start: ${loadavg().map((l) => l.toFixed(2)).join(' ')} (${CORES} cores)`);
  const tfjsRows = new Map<string, Row[]>(shapes.map(([name]) => [name, []]));
  const torchRows = new Map<string, Row[]>(shapes.map(([name]) => [name, []]));
  const torchMissing = new Map<string, string>();
  for (let round = 0; round < rounds; round++) {
    for (const [name, shape] of shapes) {
      process.stderr.write(`round ${round + 1}/${rounds}, ${name}: ${shapeLabel(shape)}\n`);
      for (const t of wasmThreads) tfjsRows.get(name)!.push(...runTfjs(shape, t));
      if (a['no-torch']) torchMissing.set(name, 'skipped (--no-torch)');
      else {
        const torch = runTorch(shape);
        if (typeof torch === 'string') torchMissing.set(name, torch);
        else torchRows.get(name)!.push(torch);
      }
    }
  }
  const summary: string[] = [];
  for (const [name, shape] of shapes) {
    const torch = merge(torchRows.get(name)!)[0];
    const isDefault = SHAPE_KEYS.every((k) => shape[k] === BENCHMARK_SHAPES.default[k]);
    const torchMs = torch ? median(torch.times) : isDefault ? REPORTED_TORCH_MS : NaN;
    const rows = merge(tfjsRows.get(name)!);
    console.log(`\n${name}: ${shapeLabel(shape)}; ${rounds} round(s) × ${a.steps} steps, interleaved`);
    console.log('| run | median ms/step | fastest step | median CPU ms/step | images/s | images/s per core | peak RSS | wasm heap | last loss | time ÷ PyTorch | load average per round |');
    console.log('|---|---|---|---|---|---|---|---|---|---|---|');
    for (const r of [...rows, ...(torch ? [torch] : [])]) {
      const ms = median(r.times);
      const ips = (r.batch * 1000) / ms;
      const ratio = Number.isNaN(torchMs) ? '–' : `${(ms / torchMs).toFixed(2)}×`;
      const cpuMs = r.cpuTimes?.length ? median(r.cpuTimes).toFixed(0) : '–';
      console.log(`| ${r.label} | ${ms.toFixed(0)} | ${Math.min(...r.times).toFixed(0)} | ${cpuMs} | ${ips.toFixed(1)} | ${(ips / r.threads).toFixed(1)} (${r.threads} thr) | ${mib(r.peakRss)} | ${r.wasmHeap === null ? '–' : mib(r.wasmHeap)} | ${r.loss.toFixed(4)} | ${ratio} | ${r.load.join(', ')} |`);
      if (r !== torch) summary.push(`| ${name} | ${r.label} | ${ms.toFixed(0)} | ${torch ? median(torch.times).toFixed(0) : '–'} | **${ratio}** | ${mib(r.peakRss)} / ${torch ? mib(torch.peakRss) : '–'} | ${(ips / r.threads).toFixed(1)} / ${torch ? ((torch.batch * 1000) / median(torch.times) / torch.threads).toFixed(1) : '–'} |`);
    }
    if (!torch) console.log(`PyTorch: ${isDefault ? `the reported ${REPORTED_TORCH_MS} ms (DESIGN.md; not run here: ${torchMissing.get(name)})` : `not run (${torchMissing.get(name)})`}`);
  }
  console.log('\n| shape | tfjs | ms/step | PyTorch ms/step | time ÷ PyTorch | peak RSS (tfjs / PyTorch) | images/s per core (tfjs / PyTorch) |');
  console.log('|---|---|---|---|---|---|---|');
  for (const line of summary) console.log(line);
  console.log(`load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
