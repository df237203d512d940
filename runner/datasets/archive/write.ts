/** Builds tar, tar.gz and zip archives in memory (tests, the demo, the quickstart's uploads). */
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { zipSync, type Zippable } from 'fflate';

export interface FileForArchive {
  name: string;
  data: Uint8Array;
}

export type ArchiveContainer = 'tar' | 'tar.gz' | 'zip';

export async function buildArchive(files: FileForArchive[], container: ArchiveContainer, directories: string[] = []): Promise<Buffer> {
  if (container === 'zip') return buildZip(files, directories);
  const tar = await buildTar(files, directories);
  return container === 'tar.gz' ? gzipSync(tar, { level: 6 }) : tar;
}

export async function buildTar(files: FileForArchive[], directories: string[] = []): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const chunk of p) chunks.push(chunk as Buffer);
  })();
  for (const dir of directories) p.entry({ name: dir.endsWith('/') ? dir : `${dir}/`, type: 'directory', mode: 0o755 });
  for (const f of files) {
    await new Promise<void>((resolve, reject) =>
      p.entry({ name: f.name, size: f.data.byteLength, mode: 0o644, mtime: new Date(0) }, Buffer.from(f.data.buffer, f.data.byteOffset, f.data.byteLength), (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

export function buildZip(files: FileForArchive[], directories: string[] = []): Buffer {
  const tree: Zippable = {};
  for (const dir of directories) tree[dir.endsWith('/') ? dir : `${dir}/`] = new Uint8Array(0);
  // PNG and JPEG are already compressed: store them; deflate everything else.
  for (const f of files) tree[f.name] = [f.data, { level: /\.(png|jpe?g|webp|gz)$/i.test(f.name) ? 0 : 6 }];
  return Buffer.from(zipSync(tree));
}
