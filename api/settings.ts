/**
 * API settings that common/config.ts does not (yet) carry. Parsed once from the environment with a
 * schema, like the rest of the configuration.
 */
import { z } from 'zod';
import { UserFacingError } from '../common/errors.js';

const schema = z.object({
  /**
   * Root of the webhook signing secrets: each tenant's secret is derived from it (HMAC), so no secret
   * needs a database column and every replica agrees. The default is for a developer's machine only.
   */
  WEBHOOK_SIGNING_KEY: z.string().min(16, 'must be at least 16 characters').default('momentum-dev-webhook-signing-key'),
});

export type ApiSettings = z.infer<typeof schema>;
export const DEV_WEBHOOK_SIGNING_KEY = 'momentum-dev-webhook-signing-key';

export function loadApiSettings(env: Record<string, string | undefined> = process.env): ApiSettings {
  const parsed = schema.safeParse({ WEBHOOK_SIGNING_KEY: env.WEBHOOK_SIGNING_KEY || undefined });
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    throw new UserFacingError(`invalid configuration: ${String(i.path[0])}: ${i.message}`);
  }
  return parsed.data;
}
