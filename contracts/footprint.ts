/**
 * What a pretrain spec will cost a runner, estimated before it is queued: parameters and peak
 * memory (fp32). A spec that cannot fit the runners' declared memory (RUNNER_MEMORY_MB) is refused
 * at submission with this estimate in the message, instead of running out of memory on a runner,
 * five attempts in a row. Pure arithmetic on the spec, shared by the API (at submission) and the
 * runner (once the dataset's real image size is known).
 *
 * The model: the trained encoder holds weights, gradients and two AdamW slots (16 bytes a
 * parameter); the momentum encoder (backbone + projector) its weights; autograd keeps each block's
 * activations for the micro-batch of both views (ViT: about 18 floats per token and dimension plus
 * two T×T maps per head; ResNet: a measured figure per 224² image scaled by area); the batch's
 * augmented views sit in memory as floats. A 25 % margin covers the backend's own buffers. It is an
 * estimate: good to a factor that separates "fits" from "cannot fit", not a measurement.
 */

/** The backbone shapes of the named ViTs: [dim, depth, heads] (MoCo v3 / DeiT). */
export const VIT_SHAPES = { vit_tiny: [192, 12, 3], vit_small: [384, 12, 12], vit_base: [768, 12, 12] } as const;
/** ResNet backbones without the classifier: parameters, and activation floats of one 224² image kept for backward. */
const RESNETS = { resnet18: { params: 11_176_512, actFloats224: 9_000_000 }, resnet50: { params: 23_508_032, actFloats224: 26_000_000 } } as const;

export interface FootprintInput {
  model?: { arch?: string; imageSize?: number; patch?: number; dim?: number; depth?: number; heads?: number };
  moco?: { projector?: { layers?: number; hiddenDim?: number; outDim?: number }; predictor?: { enabled?: boolean; layers?: number; hiddenDim?: number } };
  optim?: { batch?: number; microBatch?: number };
}

export interface Footprint {
  /** Trainable parameters of the query encoder (backbone + projector + predictor). */
  params: number;
  /** Peak bytes the run is expected to hold. */
  peakBytes: number;
  /** The image side the estimate used. */
  imageSize: number;
  parts: { optimizerState: number; momentumEncoder: number; activations: number; batchViews: number };
}

const FLOAT = 4;
const MARGIN = 1.25;

/** Parameters of an MLP head of `layers` linear layers without bias, BatchNorm after each hidden one. */
function headParams(inDim: number, hidden: number, out: number, layers: number): number {
  if (layers <= 1) return inDim * out;
  return inDim * hidden + (layers - 2) * hidden * hidden + hidden * out + (layers - 1) * 2 * hidden;
}

/**
 * The estimate for a spec at image side `imageSize` (the spec's own when it declares one). Defaults
 * mirror the trainer's: patch 4 up to 64 px and 16 above, projector 3 layers on a ViT and 2 on a
 * ResNet, heads 4096 wide, micro-batch = batch, 3 channels.
 */
export function estimateFootprint(spec: FootprintInput, imageSize: number, channels = 3): Footprint {
  const arch = spec.model?.arch ?? 'vit_small';
  const side = spec.model?.imageSize ?? imageSize;
  const batch = spec.optim?.batch ?? 256;
  const micro = spec.optim?.microBatch ?? batch;
  const vit = arch.startsWith('vit');
  const proj = { layers: spec.moco?.projector?.layers ?? (vit ? 3 : 2), hidden: spec.moco?.projector?.hiddenDim ?? 4096, out: spec.moco?.projector?.outDim ?? 256 };
  const pred = { enabled: spec.moco?.predictor?.enabled ?? true, layers: spec.moco?.predictor?.layers ?? 2, hidden: spec.moco?.predictor?.hiddenDim ?? 4096 };

  let backbone: number;
  let featureDim: number;
  let actPerImage: number;
  if (vit) {
    const [d0, l0, h0] = VIT_SHAPES[arch as keyof typeof VIT_SHAPES] ?? VIT_SHAPES.vit_small;
    const dim = spec.model?.dim ?? d0;
    const depth = spec.model?.depth ?? l0;
    const heads = spec.model?.heads ?? h0;
    const patch = spec.model?.patch ?? (side <= 64 ? 4 : 16);
    const tokens = Math.floor(side / patch) ** 2 + 1;
    backbone = channels * patch * patch * dim + dim + dim + depth * (12 * dim * dim + 13 * dim) + 2 * dim;
    featureDim = dim;
    actPerImage = depth * (18 * tokens * dim + 2 * heads * tokens * tokens) + 2 * tokens * dim;
  } else {
    const r = RESNETS[arch as keyof typeof RESNETS] ?? RESNETS.resnet50;
    backbone = r.params;
    featureDim = arch === 'resnet18' ? 512 : 2048;
    actPerImage = r.actFloats224 * (side / 224) ** 2;
  }
  const projector = headParams(featureDim, proj.hidden, proj.out, proj.layers);
  const predictor = pred.enabled ? headParams(proj.out, pred.hidden, proj.out, pred.layers) : 0;
  const params = backbone + projector + predictor;
  const parts = {
    optimizerState: params * FLOAT * 4,
    momentumEncoder: (backbone + projector) * FLOAT,
    activations: micro * 2 * actPerImage * FLOAT,
    batchViews: batch * 2 * side * side * channels * FLOAT,
  };
  const peakBytes = Math.round((parts.optimizerState + parts.momentumEncoder + parts.activations + parts.batchViews) * MARGIN);
  return { params, peakBytes, imageSize: side, parts };
}

/** The wasm backend cannot address more than 4 GiB, whatever the runner has. */
export const WASM_HEAP_BYTES = 4 * 1024 ** 3;

/** "1.2 GiB", "870 MiB", "5.4 M", "9.7 G": for messages. */
export function formatGiB(bytes: number): string {
  return bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : `${Math.max(1, Math.round(bytes / 1024 ** 2))} MiB`;
}
export function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return String(n);
}

/**
 * Null when the spec fits `memoryBytes` (the backend's own ceiling applies on wasm), else the
 * sentence saying why not, with the estimate and its largest part.
 */
export function refuseFootprint(spec: FootprintInput & { resources?: { backend?: string } }, imageSize: number, memoryBytes: number, channels = 3): string | null {
  const f = estimateFootprint(spec, imageSize, channels);
  const wasm = spec.resources?.backend === 'wasm';
  const limit = wasm ? Math.min(memoryBytes, WASM_HEAP_BYTES) : memoryBytes;
  if (f.peakBytes <= limit) return null;
  const [part, bytes] = Object.entries(f.parts).sort((a, b) => b[1] - a[1])[0]!;
  const what = { optimizerState: 'weights, gradients and AdamW state', momentumEncoder: 'the momentum encoder', activations: 'activations of one micro-batch (set optim.microBatch lower)', batchViews: 'the augmented views of one batch' }[part];
  return (
    `the run needs about ${formatGiB(f.peakBytes)} (${formatCount(f.params)} parameters at ${f.imageSize} px; largest part: ${what}, ${formatGiB(bytes)}) ` +
    `but runners declare ${formatGiB(limit)}${wasm && limit < memoryBytes ? ' (the wasm heap limit)' : ''} (RUNNER_MEMORY_MB)`
  );
}
