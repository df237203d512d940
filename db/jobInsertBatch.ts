/**
 * Group commit for job submissions: submissions that arrive while earlier ones are being written
 * share one statement, one transaction and one WAL flush, instead of one each.
 *
 * Why: the submission statement (db/jobQueries.ts insertJobs) costs Postgres far more in what every
 * statement pays (protocol messages, executor start-up over a dozen plan nodes, locks on three
 * tables and their indexes, a snapshot, a commit and its flush) than in its rows, and the API pays
 * a query's worth of postgres.js work per statement too. Under load, many wait at once.
 *
 * How: at most `maxInFlight` statements run at a time, and another one starts only for more
 * waiting submissions than there are statements out. A submission that arrives when none is out is
 * written at once, alone, by insertJob itself (no timer, no added latency when requests come one at
 * a time); the ones that arrive meanwhile wait, and the next statement takes them all (up to
 * `maxBatch`): the same statement, over more jobs. So batches grow with the load.
 *
 * Each job's answer is the one insertJob gives alone (the same outcomes, read by submissionOutcome), and
 * what a submission guarantees holds per job: its job, first event and outbox rows commit together;
 * idempotency is the same unique index (a key repeated within one batch inserts once; the second
 * finds the first, as it would one statement later); each tenant-limit check reads the statement's
 * snapshot. So that a batch does not weaken the active-job limit (soft only by the requests in
 * flight), a batch holds at most one submission per tenant that counts its active jobs; the
 * others wait for the next. A batch that fails as a whole (a dataset version deleted meanwhile: a
 * foreign key) is written again one job at a time, so each gets its own answer.
 */
import type { Sql } from './client.js';
import { insertJob, insertJobs, submissionOutcome, type InsertJobResult, type NewJob, type SubmissionRow } from './jobQueries.js';

export interface JobInsertBatchOptions {
  /** Statements writing submissions at once. Default 2: one on the wire while Postgres runs the other. */
  maxInFlight?: number;
  /** Most submissions in one statement. Default 64. */
  maxBatch?: number;
}

interface Waiting {
  job: NewJob;
  resolve: (result: InsertJobResult) => void;
  reject: (err: unknown) => void;
}

export class JobInsertBatcher {
  private waiting: Waiting[] = [];
  private inFlight = 0;
  private readonly maxInFlight: number;
  private readonly maxBatch: number;

  constructor(
    private readonly sql: Sql,
    o: JobInsertBatchOptions = {},
  ) {
    this.maxInFlight = o.maxInFlight ?? 2;
    this.maxBatch = o.maxBatch ?? 64;
  }

  insert(job: NewJob): Promise<InsertJobResult> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ job, resolve, reject });
      this.writeWaiting();
    });
  }

  private writeWaiting(): void {
    // Another statement only for more submissions than there are statements out: one that waits
    // alone beside a busy statement waits for it or for company, and batches grow with the load.
    while (this.inFlight < this.maxInFlight && this.waiting.length > this.inFlight) {
      const batch = this.nextBatch();
      this.inFlight++;
      void this.write(batch).finally(() => {
        this.inFlight--;
        this.writeWaiting();
      });
    }
  }

  /** The oldest waiting submissions, up to maxBatch, with at most one that counts per tenant. */
  private nextBatch(): Waiting[] {
    if (this.waiting.length === 1) return this.waiting.splice(0, 1);
    const batch: Waiting[] = [];
    const rest: Waiting[] = [];
    const counting = new Set<string>();
    for (const w of this.waiting) {
      const counts = w.job.maxActiveJobs !== null;
      if (batch.length >= this.maxBatch || (counts && counting.has(w.job.tenantId))) {
        rest.push(w);
        continue;
      }
      if (counts) counting.add(w.job.tenantId);
      batch.push(w);
    }
    this.waiting = rest;
    return batch;
  }

  private async write(batch: Waiting[]): Promise<void> {
    // Alone: the same statement, and nothing to write again apart if it fails.
    if (batch.length === 1) return settle(batch[0]!, () => insertJob(this.sql, batch[0]!.job));
    let rows: SubmissionRow[];
    try {
      rows = await insertJobs(this.sql, batch.map((w) => w.job));
    } catch {
      // One job spoiled the statement for all: each alone gets its own answer (or its own error).
      await Promise.all(batch.map((w) => settle(w, () => insertJob(this.sql, w.job))));
      return;
    }
    await Promise.all(batch.map((w, i) => settle(w, () => submissionOutcome(this.sql, w.job, rows[i]!))));
  }
}

async function settle(w: Waiting, outcome: () => Promise<InsertJobResult>): Promise<void> {
  try {
    w.resolve(await outcome());
  } catch (err) {
    w.reject(err);
  }
}

