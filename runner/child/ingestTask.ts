/** The child's side of an `ingest` job: the datasets module's ingestion, with its own connections. */
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { config } from '../../common/config.js';
import { Storage, storageConfigFrom } from '../../common/storage.js';
import { connectDatabase } from '../../db/client.js';
import { ingestDatasetVersion } from '../datasets/index.js';
import type { IngestTask } from '../supervisor/protocol.js';
import { ipcPinoLogger, type TaskIO, type TaskResult } from './taskSupport.js';

export async function runIngestTask(task: IngestTask, io: TaskIO): Promise<TaskResult> {
  const c = config();
  const database = connectDatabase(c.DATABASE_URL, { max: 2 });
  const storage = new Storage(storageConfigFrom(c));
  const workDir = join(c.DATA_DIR, 'tmp');
  await mkdir(workDir, { recursive: true });
  await io.send({ type: 'ready', runtime: { backend: 'none', device: 'cpu' } });
  try {
    // Ingestion is not interruptible half-way; a stop request waits for it (it is short), and once
    // the version is ready the job has succeeded, whatever was asked meanwhile.
    const manifest = await ingestDatasetVersion({ db: database.db, storage, log: ipcPinoLogger(io), workDir }, task.datasetVersionId);
    const result = {
      datasetVersionId: task.datasetVersionId,
      height: manifest.height,
      width: manifest.width,
      channels: manifest.channels,
      classes: manifest.classes.length,
      train: manifest.splits.train.count,
      val: manifest.splits.val?.count ?? 0,
    };
    return { stopped: false, result };
  } finally {
    storage.destroy();
    await database.close();
  }
}
