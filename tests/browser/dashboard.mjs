// Drives Ferry's /admin dashboard in Debian's headless Chromium, as an
// operator would: sign in, watch a queue fill (the numbers update without a
// reload), replay a dead job, reset an open breaker.
//
//   node tests/browser/dashboard.mjs <base-url> <admin-token> [screenshot-dir]
//
// Run by tests/tests/dashboard_browser.rs, which sets the scene (a queue
// being filled, one dead letter, an open breaker for `deepseek`) and checks
// Redis afterwards. Exits 0 when every step passed, 1 with the failed step.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, token, shots] = process.argv.slice(2);
if (!base || !token) {
  console.error('usage: dashboard.mjs <base-url> <admin-token> [screenshot-dir]');
  process.exit(2);
}

const STEP_TIMEOUT = 20_000;
const profile = mkdtempSync(join(tmpdir(), 'ferry-chromium-'));
let context;

let currentPage;

async function step(name, run) {
  try {
    await run();
    console.log(`ok: ${name}`);
  } catch (e) {
    console.error(`failed: ${name}: ${e.message}`);
    if (currentPage) {
      console.error(`  at ${currentPage.url()}: ${(await currentPage.textContent('body').catch(() => '')).slice(0, 500)}`);
      await shot(currentPage, 'failed').catch(() => {});
    }
    throw e;
  }
}

async function shot(page, name) {
  if (shots) await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

async function number(locator) {
  return Number((await locator.textContent()).trim());
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  context.setDefaultTimeout(STEP_TIMEOUT);
  const page = context.pages()[0] ?? (await context.newPage());
  currentPage = page;

  await step('an unsigned visitor gets the sign-in form', async () => {
    const response = await page.goto(`${base}/admin`);
    if (response.status() !== 401) throw new Error(`status ${response.status()}`);
    await page.locator('input[name="token"]').waitFor();
  });

  await step('a wrong token is refused', async () => {
    await page.fill('input[name="token"]', 'not-the-token');
    await Promise.all([page.waitForLoadState(), page.click('button[type="submit"]')]);
    await page.getByText('does not grant admin access').waitFor();
  });

  await step('the admin token signs in', async () => {
    await page.fill('input[name="token"]', token);
    await Promise.all([page.waitForURL(`${base}/admin`), page.click('button[type="submit"]')]);
    await page.getByRole('heading', { name: 'Queues' }).waitFor();
    if (page.url().includes(token)) throw new Error('the token is in the URL');
    const cookies = await context.cookies(`${base}/admin`);
    const session = cookies.find((c) => c.name === 'ferry_admin');
    if (!session || !session.httpOnly || session.sameSite !== 'Strict') {
      throw new Error(`session cookie not HttpOnly+Strict: ${JSON.stringify(session)}`);
    }
    if (session.value.includes(token)) throw new Error('the token is in the cookie');
    await shot(page, '1-overview');
  });

  await step('the batch queue fills before our eyes (live numbers)', async () => {
    const depth = page.locator('[data-q="batch"][data-f="depth"]');
    const first = await number(depth);
    await page.waitForFunction(
      (start) => Number(document.querySelector('[data-q="batch"][data-f="depth"]').textContent) >= start + 3,
      first,
      { timeout: STEP_TIMEOUT },
    );
    const rate = page.locator('[data-q="batch"][data-f="in_rate"]');
    await page.waitForFunction(
      () => Number(document.querySelector('[data-q="batch"][data-f="in_rate"]').textContent) > 0,
      null,
      { timeout: STEP_TIMEOUT },
    );
    console.log(`  batch depth ${first} -> ${await number(depth)}, ${await rate.textContent()} in/s`);
    await shot(page, '2-filling');
  });

  await step('a dead job is replayed', async () => {
    await page.click('a[href="/admin/dlq/wechat"]');
    const rows = page.locator('#dead-letters tr[data-job]');
    await rows.first().waitFor();
    if ((await rows.count()) !== 1) throw new Error(`expected one dead letter, saw ${await rows.count()}`);
    const job = await rows.first().getAttribute('data-job');
    await Promise.all([
      page.waitForURL(`${base}/admin/dlq/wechat`),
      rows.first().getByRole('button', { name: 'Replay' }).click(),
    ]);
    await page.locator('#empty').waitFor();
    console.log(`  replayed ${job}`);
  });

  await step('an open breaker is reset', async () => {
    await page.goto(`${base}/admin`);
    const row = page.locator('#breakers tr[data-provider="deepseek"]');
    const state = row.locator('[data-f="state"]');
    if ((await state.textContent()).trim() !== 'open') throw new Error('deepseek is not open');
    await shot(page, '3-breaker-open');
    await Promise.all([page.waitForURL(`${base}/admin`), row.getByRole('button', { name: 'Reset' }).click()]);
    await page.waitForFunction(
      () => document.querySelector('#breakers tr[data-provider="deepseek"] [data-f="state"]').textContent.trim() === 'closed',
    );
    await shot(page, '4-breaker-closed');
  });

  await context.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(0);
} catch (e) {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
