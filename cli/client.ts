/** A small client of the Momentum API for the CLI: JSON in and out, errors as ApiCallError. */
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

  async call<T = any>(method: string, path: string, opts: { body?: unknown; headers?: Record<string, string>; accept?: string } = {}): Promise<T> {
    const res = await this.raw(method, path, opts);
    const text = await res.text();
    const body = text ? safeJson(text) : null;
    if (!res.ok) {
      const err = (body as any)?.error;
      if (err) throw new ApiCallError(res.status, err.code, err.message, err.details);
      throw new ApiCallError(res.status, 'http_' + res.status, `${method} ${path} answered ${res.status}: ${text.slice(0, 200)}`);
    }
    return body as T;
  }

  raw(method: string, path: string, opts: { body?: unknown; headers?: Record<string, string>; accept?: string } = {}): Promise<Response> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.o.apiKey}`, accept: opts.accept ?? 'application/json', ...opts.headers };
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    return fetch(new URL(path, this.o.baseUrl), { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
