// Drives Ferry's /admin/charts in Debian's headless Chromium: sign in, see
// the last hour's charts with the points the test wrote (point counts, the
// known peak, the configured thresholds, an alert mark), watch the charts
// swap in live, then the 24 h window. Screenshots: charts-1h.png and
// charts-24h.png in the screenshot directory.
//
//   node tests/browser/charts.mjs <base-url> <admin-token> <peak> <screenshot-dir>
//
// Run by tests/tests/dashboard_browser.rs. Exits 0 when every step passed.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, token, peak, shots] = process.argv.slice(2);
if (!base || !token || !peak || !shots) {
  console.error('usage: charts.mjs <base-url> <admin-token> <peak> <screenshot-dir>');
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), 'ferry-chromium-'));
let context;
let page;

async function step(name, run) {
  try {
    await run();
    console.log(`ok: ${name}`);
  } catch (e) {
    console.error(`failed: ${name}: ${e.message}`);
    if (page) await page.screenshot({ path: join(shots, 'charts-failed.png'), fullPage: true }).catch(() => {});
    throw e;
  }
}

async function attr(selector, name) {
  return page.locator(selector).first().getAttribute(name);
}

async function expect(selector, name, want) {
  const got = await attr(selector, name);
  if (got !== String(want)) throw new Error(`${selector} ${name}: got ${got}, want ${want}`);
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  context.setDefaultTimeout(20_000);
  page = context.pages()[0] ?? (await context.newPage());

  await step('sign in and follow the overview link to the charts', async () => {
    await page.goto(`${base}/admin`);
    await page.fill('input[name="token"]', token);
    await Promise.all([page.waitForURL(`${base}/admin`), page.click('button[type="submit"]')]);
    await Promise.all([page.waitForURL(/\/admin\/charts/), page.click('main a[href="/admin/charts"]')]);
  });

  await step('the last hour: 60 points a line, the test\'s peak, the thresholds', async () => {
    await page.locator('svg#wechat-requests polyline').waitFor();
    await expect('svg#wechat-requests', 'data-points', 60);
    await expect('svg#wechat-requests polyline[data-series="requests"]', 'data-peak', peak);
    await expect('svg#wechat-requests line.threshold', 'data-threshold', 100);
    await expect('svg#wechat-errors line.threshold', 'data-threshold', 5);
    await expect('svg#wechat-p95 line.threshold', 'data-threshold', 5);
    const points = (await attr('svg#wechat-requests polyline', 'points')).trim().split(/\s+/);
    if (points.length !== 60) throw new Error(`${points.length} points drawn`);
    if ((await page.locator('svg#wechat-requests line.alert-mark').count()) < 1) throw new Error('no alert mark');
    await page.locator('svg#queue-wechat polyline[data-series="in"]').waitFor();
    await page.locator('svg#provider-deepseek-calls polyline[data-series="success"]').waitFor();
    const title = await page.locator('svg#wechat-requests > title').textContent();
    if (!title.includes('/wechat requests')) throw new Error(`title ${title}`);
    await page.screenshot({ path: join(shots, 'charts-1h.png'), fullPage: true });
  });

  await step('the charts are swapped in live', async () => {
    await page.waitForFunction(() => document.getElementById('charts').dataset.updated, null, { timeout: 15_000 });
    await expect('svg#wechat-requests polyline[data-series="requests"]', 'data-peak', peak);
  });

  await step('24 h on demand: 1440 points', async () => {
    await page.goto(`${base}/admin/charts?window=24h`);
    await expect('svg#wechat-requests', 'data-points', 1440);
    await expect('svg#wechat-requests polyline[data-series="requests"]', 'data-peak', peak);
    await page.screenshot({ path: join(shots, 'charts-24h.png'), fullPage: true });
  });

  await step('a bad window is a clear 400', async () => {
    const r = await page.goto(`${base}/admin/charts?window=7d`);
    if (r.status() !== 400) throw new Error(`status ${r.status()}`);
  });
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(0);
} catch (e) {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
