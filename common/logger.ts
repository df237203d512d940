/** Structured logs (pino). A run's logger is a child carrying jobId and attempt on every line. */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string = process.env.LOG_LEVEL ?? 'info', name = 'momentum'): Logger {
  return pino({ name, level, base: { pid: process.pid } });
}
