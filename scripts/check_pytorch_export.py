#!/usr/bin/env python3
"""Load a Momentum ViT backbone export in PyTorch and compute its features.

Checks the claim that `backbone.safetensors` + `backbone.json` (runner/moco/checkpoint.ts) load
into the reference PyTorch model: a minimal ViT whose parameter names, shapes and forward pass are
those of timm 0.4.9's VisionTransformer as MoCo v3's vits.py uses it (pre-norm blocks, LayerNorm
eps 1e-6, exact GELU, fused qkv with bias, attention scale (D/heads)^-0.5, class token + position
embedding, final norm, class-token output). Pooling 'gap' (final norm on every token, then the
mean) and 'gap_no_ln' (mean, no final norm) have no class token, as the export declares in its
meta. The state dict is loaded with strict=True: every name and shape must match, nothing left
over. Only torch is needed (the safetensors file is parsed here by hand, no `safetensors` package).

Usage (Debian's torch: run /usr/bin/python3 with LD_LIBRARY_PATH set to the folder of
libopenblas0-pthread's libblas.so.3, e.g. /usr/lib/x86_64-linux-gnu/openblas-pthread):

  check_pytorch_export.py --weights backbone.safetensors --meta backbone.json \
      --input images.f32 --batch B [--normalized] --out features.json|features.f32

--input: raw little-endian float32, NCHW [B, 3, S, S], RGB in [0, 1]; the script normalises it
with the meta's input mean/std unless --normalized says it already is. Without --input, a fixed
random batch (--seed) is used. --out ending in .json writes {"shape": [B, F], "features": [...]}
(row-major floats); anything else writes raw little-endian float32 [B, F]. A summary goes to stderr.
"""
import argparse
import array
import json
import math
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

# safetensors dtype -> (array typecode, torch dtype, bytes per element)
_DTYPES = {
    'F32': ('f', torch.float32, 4),
    'F64': ('d', torch.float64, 8),
    'I32': ('i', torch.int32, 4),
    'I64': ('q', torch.int64, 8),
}


def read_safetensors(path):
    """{name: tensor}, metadata: 8-byte LE header length, JSON header, raw LE data."""
    with open(path, 'rb') as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f'{path}: not a safetensors file (shorter than 8 bytes)')
    (n,) = struct.unpack('<Q', raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f'{path}: header length {n} exceeds the file')
    header = json.loads(raw[8:8 + n].decode('utf-8'))
    data = memoryview(raw)[8 + n:]
    metadata = header.pop('__metadata__', {}) or {}
    tensors = {}
    covered = []
    for name, e in header.items():
        dtype, shape, (begin, end) = e['dtype'], list(e['shape']), e['data_offsets']
        if dtype not in _DTYPES:
            raise ValueError(f'{path}: tensor {name}: dtype {dtype} not supported ({", ".join(_DTYPES)})')
        code, tdtype, size = _DTYPES[dtype]
        count = math.prod(shape)
        if end - begin != count * size or begin < 0 or end > len(data):
            raise ValueError(f'{path}: tensor {name}: data_offsets [{begin}, {end}] do not fit shape {shape} {dtype}')
        a = array.array(code)
        if a.itemsize != size:
            raise ValueError(f'array typecode {code} is {a.itemsize} bytes here, not {size}')
        a.frombytes(data[begin:end])
        if sys.byteorder != 'little':
            a.byteswap()
        tensors[name] = torch.frombuffer(a, dtype=tdtype).clone().reshape(shape) if count else torch.zeros(shape, dtype=tdtype)
        covered.append((begin, end))
    pos = 0
    for begin, end in sorted(covered):
        if begin != pos:
            raise ValueError(f'{path}: data is not contiguous at byte {pos} (next tensor starts at {begin})')
        pos = end
    if pos != len(data):
        raise ValueError(f'{path}: {len(data) - pos} trailing bytes after the last tensor')
    return tensors, metadata


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D]


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # timm 0.4.9 Attention.forward
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, nn.GELU's default


class Block(nn.Module):
    def __init__(self, dim, heads, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """timm 0.4.9 VisionTransformer (num_classes=0), with the pooling variants of the meta."""

    def __init__(self, m):
        super().__init__()
        size, patch, dim = m['imageSize'], m['patch'], m['dim']
        if size % patch or dim % m['heads']:
            raise ValueError(f'inconsistent model config: {m}')
        self.pooling = m['pooling']
        if self.pooling not in ('cls', 'gap', 'gap_no_ln'):
            raise ValueError(f'unknown pooling {self.pooling!r}')
        tokens = (size // patch) ** 2 + (1 if self.pooling == 'cls' else 0)
        self.patch_embed = PatchEmbed(patch, dim)
        if self.pooling == 'cls':
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # Always present (timm has it); posEmbed 'none' is exported as zeros.
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.ModuleList([Block(dim, m['heads'], 1e-6) for _ in range(m['depth'])])
        if self.pooling != 'gap_no_ln':
            self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        x = self.patch_embed(x)
        if self.pooling == 'cls':
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        if self.pooling == 'cls':
            return self.norm(x)[:, 0]
        if self.pooling == 'gap':
            x = self.norm(x)
        return x.mean(dim=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--weights', required=True, help='backbone.safetensors')
    ap.add_argument('--meta', required=True, help='backbone.json')
    ap.add_argument('--input', help='raw LE float32 NCHW [B,3,S,S]; RGB in [0,1] unless --normalized')
    ap.add_argument('--batch', type=int, help='B of --input (default: inferred from its size)')
    ap.add_argument('--normalized', action='store_true', help='the input is already normalised')
    ap.add_argument('--seed', type=int, default=0, help='random input when --input is absent')
    ap.add_argument('--out', help='features: .json, else raw LE float32 [B,F]')
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    with open(a.meta, encoding='utf-8') as f:
        meta = json.load(f)
    if meta.get('format') != 'momentum.moco-v3.backbone/1':
        raise SystemExit(f'{a.meta}: unknown format {meta.get("format")!r}')
    if meta.get('naming') != 'timm-0.4.9-VisionTransformer':
        raise SystemExit(f'{a.meta}: naming {meta.get("naming")!r}: this script checks ViT exports only')
    m = meta['model']
    state, st_meta = read_safetensors(a.weights)
    if st_meta.get('naming') not in (None, meta['naming']):
        raise SystemExit(f'{a.weights}: naming {st_meta.get("naming")!r} disagrees with {a.meta}')

    model = ViT(m)
    model.load_state_dict(state, strict=True)  # raises on any missing, unexpected or misshapen tensor
    model.eval()

    S = m['imageSize']
    per_image = 3 * S * S
    if a.input:
        x = array.array('f')
        with open(a.input, 'rb') as f:
            x.frombytes(f.read())
        if sys.byteorder != 'little':
            x.byteswap()
        B = a.batch if a.batch is not None else len(x) // per_image
        if B <= 0 or len(x) != B * per_image:
            want = f'{B}x3x{S}x{S}' if a.batch is not None else f'a positive multiple of 3x{S}x{S}'
            raise SystemExit(f'{a.input}: {len(x)} floats, not {want}')
        x = torch.frombuffer(x, dtype=torch.float32).clone().reshape(B, 3, S, S)
    else:
        g = torch.Generator().manual_seed(a.seed)
        x = torch.rand(a.batch or 4, 3, S, S, generator=g)
    if not a.normalized:
        mean = torch.tensor(meta['input']['mean'], dtype=torch.float32).reshape(1, 3, 1, 1)
        std = torch.tensor(meta['input']['std'], dtype=torch.float32).reshape(1, 3, 1, 1)
        x = (x - mean) / std

    with torch.no_grad():
        feats = model(x).contiguous()
    if feats.shape[1] != meta['featureDim']:
        raise SystemExit(f'features have dim {feats.shape[1]}, meta says featureDim {meta["featureDim"]}')

    if a.out:
        if a.out.endswith('.json'):
            with open(a.out, 'w', encoding='utf-8') as f:
                json.dump({'shape': list(feats.shape), 'features': feats.reshape(-1).tolist()}, f)
        else:
            out = array.array('f', feats.reshape(-1).tolist())
            if sys.byteorder != 'little':
                out.byteswap()
            with open(a.out, 'wb') as f:
                out.tofile(f)
    n_params = sum(t.numel() for t in state.values())
    print(f'loaded {len(state)} tensors ({n_params} values) strict=True into ViT(pooling={m["pooling"]}, '
          f'posEmbed={m["posEmbed"]}, dim={m["dim"]}, depth={m["depth"]}, heads={m["heads"]}); '
          f'features {list(feats.shape)}', file=sys.stderr)


if __name__ == '__main__':
    main()
