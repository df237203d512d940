/**
 * The CLI's client of the Momentum API, typed by the API's own OpenAPI document
 * (contracts/api.gen.ts, generated from the routes): `api.op('getJob', { params: { id } })` checks
 * the inputs and types the answer, so a route change that breaks the CLI fails the typecheck.
 * Errors come back as ApiCallError with the API's `{ code, message, details }`.
 */
import { OPERATIONS, type Operations } from '../contracts/api.gen.js';

export type OperationId = keyof Operations;
export type OperationInput<K extends OperationId> = Operations[K]['input'];
export type OperationOutput<K extends OperationId> = Operations[K]['response'];
type Scalar = string | number | boolean | null | undefined;
type Loose = { params?: Record<string, Scalar>; query?: Record<string, Scalar | Scalar[]>; headers?: Record<string, Scalar>; body?: unknown };
/** Operations whose inputs are all optional may be called without them. */
type InputArgs<K extends OperationId> = Record<string, never> extends OperationInput<K> ? [input?: OperationInput<K>] : [input: OperationInput<K>];

export class ApiCallError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: { path: string; message: string }[] = [],
  ) {
    super(message);
    this.name = 'ApiCallError';
  }
}

export interface ClientOptions {
  baseUrl: string;
  apiKey: string;
}

export class MomentumClient {
  constructor(private readonly o: ClientOptions) {}

  /** Calls one operation of the API by its operationId. */
  async op<K extends OperationId>(id: K, ...[input]: InputArgs<K>): Promise<OperationOutput<K>> {
    return (await this.call(OPERATIONS[id].method, this.url(id, input as Loose | undefined), input as Loose | undefined)) as OperationOutput<K>;
  }

  /** The same request as `op`, answered raw (for streams): the caller reads the body. */
  stream<K extends OperationId>(id: K, input: OperationInput<K>, accept: string): Promise<Response> {
    const loose = input as Loose;
    return this.fetch(OPERATIONS[id].method, this.url(id, loose), { ...loose, accept });
  }

  /** A URL the API handed out itself (e.g. a multipart upload's completeUrl). */
  async callPath(method: string, path: string, body?: unknown): Promise<unknown> {
    return this.call(method, path, { body });
  }

  private url(id: OperationId, input: Loose | undefined): string {
    const path = OPERATIONS[id].path.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(String(input?.params?.[name] ?? '')));
    const q = new URLSearchParams();
    for (const [name, value] of Object.entries(input?.query ?? {})) {
      for (const v of Array.isArray(value) ? value : [value]) if (v !== undefined && v !== null) q.append(name, String(v));
    }
    return q.size ? `${path}?${q}` : path;
  }

  private async call(method: string, path: string, input: Loose | undefined): Promise<unknown> {
    const res = await this.fetch(method, path, input ?? {});
    const text = await res.text();
    const body = text ? safeJson(text) : null;
    if (!res.ok) {
      const err = (body as { error?: { code: string; message: string; details?: { path: string; message: string }[] } } | null)?.error;
      if (err) throw new ApiCallError(res.status, err.code, err.message, err.details);
      throw new ApiCallError(res.status, `http_${res.status}`, `${method} ${path} answered ${res.status}: ${text.slice(0, 200)}`);
    }
    return body;
  }

  private fetch(method: string, path: string, input: Loose & { accept?: string }): Promise<Response> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.o.apiKey}`, accept: input.accept ?? 'application/json' };
    for (const [name, value] of Object.entries(input.headers ?? {})) if (value !== undefined && value !== null) headers[name] = String(value);
    if (input.body !== undefined) headers['content-type'] = 'application/json';
    return fetch(new URL(path, this.o.baseUrl), { method, headers, body: input.body === undefined ? undefined : JSON.stringify(input.body) });
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
