import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSystem, type TestSystem } from '../testing/system.js';
import { API_TITLE, DOCS_PREFIX } from './openapi.js';

/** Debian's Chromium, which scripts/ensure-deps.sh installs when it is missing. */
function chromiumPath(): string {
  try {
    return execFileSync('sh', ['-c', 'command -v chromium'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error("chromium is not installed: run `bash scripts/ensure-deps.sh` (it installs Debian's chromium)");
  }
}

/** The page's DOM after its scripts ran, as headless Chromium sees it. */
function dumpDom(chromium: string, url: string): Promise<string> {
  const profile = mkdtempSync(join(tmpdir(), 'obey-chromium-'));
  return new Promise<string>((resolve, reject) => {
    execFile(
      chromium,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--no-first-run',
        `--user-data-dir=${profile}`,
        // Swagger UI renders on the client: let its scripts fetch the document and render it.
        '--virtual-time-budget=10000',
        '--dump-dom',
        url,
      ],
      { timeout: 45_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        rmSync(profile, { recursive: true, force: true });
        if (err !== null) reject(new Error(`chromium failed: ${err.message}\n${stderr}`));
        else resolve(stdout);
      },
    );
  });
}

let sys: TestSystem;
let baseUrl: string;
beforeAll(async () => {
  sys = await startTestSystem();
  await sys.app.listen({ host: '127.0.0.1', port: 0 });
  baseUrl = `http://127.0.0.1:${(sys.app.server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await sys?.stop();
});

describe('the API documentation UI in a browser', () => {
  it('loads /api/docs in headless Chromium and renders the document: title, tags and operations', async () => {
    const dom = await dumpDom(chromiumPath(), `${baseUrl}${DOCS_PREFIX}`);
    expect(dom).toContain('id="swagger-ui"');
    // Rendered by Swagger UI's scripts from /api/docs/json, not part of the static page.
    expect(dom).toContain('swagger-container');
    expect(dom).toContain(API_TITLE);
    for (const tag of ['auth', 'content', 'alerts']) expect(dom).toContain(`data-tag="${tag}"`);
    expect(dom).toContain('/api/auth/sign-in');
    expect(dom).toContain('/api/content/threads/{id}/posts');
  });
});
