import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { resolve } from 'node:path';
import nodemailer from 'nodemailer';
import { expect, it } from 'vitest';
import { freePort } from '../testing/servers.js';

it('the development mail catcher keeps what it receives and shows it in its inbox', async () => {
  const [smtpPort, httpPort] = [await freePort(), await freePort()];
  const child = spawn(process.execPath, ['--import', 'tsx', resolve(import.meta.dirname, '../../scripts/mail-catcher.ts')], {
    env: { ...process.env, MAIL_CATCHER_SMTP_PORT: String(smtpPort), MAIL_CATCHER_HTTP_PORT: String(httpPort) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  try {
    await new Promise<void>((ok, fail) => {
      child.stderr!.on('data', (c: Buffer) => c.toString().includes('inbox on') && ok());
      child.once('exit', () => fail(new Error('mail catcher exited')));
    });
    await nodemailer.createTransport(`smtp://127.0.0.1:${smtpPort}`).sendMail({
      from: 'no-reply@forum.test',
      to: 'ada@forum.test',
      subject: 'Confirm <your> address',
      text: 'Follow http://forum.test/verify-email?token=abc.def',
    });
    const list = (await (await fetch(`http://127.0.0.1:${httpPort}/api/messages`)).json()) as {
      id: number;
      subject: string;
      to: string;
    }[];
    expect(list).toMatchObject([{ subject: 'Confirm <your> address', to: 'ada@forum.test' }]);
    const inbox = await (await fetch(`http://127.0.0.1:${httpPort}/`)).text();
    expect(inbox).toContain('Confirm &#60;your&#62; address');
    const mail = await (await fetch(`http://127.0.0.1:${httpPort}/${list[0]!.id}`)).text();
    expect(mail).toContain('<a href="http://forum.test/verify-email?token=abc.def">');
  } finally {
    child.kill('SIGTERM');
    await once(child, 'exit');
  }
});
