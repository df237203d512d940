/** What an API key may do. `admin` implies every other scope (and manages keys). */
export const SCOPES = ['jobs:read', 'jobs:write', 'datasets:read', 'datasets:write', 'checkpoints:read', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

export function hasScope(granted: readonly string[], needed: Scope): boolean {
  return granted.includes('admin') || granted.includes(needed);
}
