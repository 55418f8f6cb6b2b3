import { connectNats } from '../../../eventstore/nats.js';
import { serviceNames } from '../../../eventstore/streams.js';
import { testLog } from '../../../eventstore/testing/nats.js';
import { createMailingService } from '../index.js';
import { FAST, MAIL_FROM } from './bed.js';

/**
 * One mailing instance in a process of its own, for the tests that kill it (`node --import tsx`).
 * Env: NATS_URL, SMTP_URL; CRASH_AFTER=sent makes it SIGKILL itself once an email's outcome is
 * written, before the command is acknowledged. Prints `ready` once it consumes.
 */
const env = process.env;
const nats = await connectNats({ url: env.NATS_URL ?? '', name: 'mailing-child' });
const service = createMailingService({
  ...FAST,
  mailFrom: MAIL_FROM,
  concurrency: 1,
  smtpUrl: env.SMTP_URL ?? '',
  runtime: { nats, names: serviceNames('mailing'), instanceId: 'mailing-child', log: testLog },
  onOutcome: (o) => {
    if (env.CRASH_AFTER === o.outcome) process.kill(process.pid, 'SIGKILL');
  },
});
await service.start();
process.stdout.write('ready\n');
