/**
 * Datasets for Momentum: ingestion of uploads into shards (runner's ingest job), the shard loader
 * (trainer and probe), synthetic data and format writers (tests, demo, quickstart), Fashion-MNIST.
 * See docs/datasets.md.
 */
export { ingestDatasetVersion, failDatasetVersion, type IngestContext } from './ingest.js';
export { DatasetIngestError, type DatasetIngestErrorKind } from './errors.js';
export { openDatasetSplit, ShardedImageDataset, ShardChecksumError, type OpenSplitOptions, type SplitName } from './loader.js';
export { generateSyntheticDataset, type SyntheticOptions } from './synthetic.js';
export { writeImageFolderArchive, writeIdxArchive, writeIdxFiles, writeCifarArchive, encodeImage, readAll, type SplitDatasets } from './writers.js';
export { importFashionMnist, fashionMnistIdxArchive, FASHION_MNIST_DIR, FASHION_MNIST_CLASSES } from './fashionMnist.js';
export { buildArchive, type ArchiveContainer } from './archive/write.js';
export { decodeShard, SHARD_MAGIC, SHARD_VERSION } from './shardFormat.js';
