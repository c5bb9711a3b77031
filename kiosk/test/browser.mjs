// Drives the kiosk page in Debian's Chromium (playwright-core, no downloaded browser) for
// tests/tests/kiosk.rs, which owns the broker and the publishers.
//
// Lock-step with the Rust test: at each checkpoint this script prints `@@ <name>` and waits for
// a line on standard input (the Rust side's "I did my part, go on"). Any failed check exits 1
// with the reason on standard error.
//
// Environment: KIOSK_URL (the page with its query string), SCREENSHOTS (a directory).
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const WAIT = 30_000; // generous: two cores shared with a Rust build
const url = process.env.KIOSK_URL;
const shots = process.env.SCREENSHOTS;
if (!url || !shots) {
  console.error('KIOSK_URL and SCREENSHOTS must be set');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const stdin = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function checkpoint(name) {
  console.log(`@@ ${name}`);
  const { done } = await stdin.next();
  if (done) throw new Error(`stdin closed at checkpoint ${name}`);
}

function expect(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const userDataDir = mkdtempSync(join(tmpdir(), 'kiosk-chromium-'));
let context;
const warnings = [];
try {
  // These flags are needed on this machine: without the background-networking ones Chromium's
  // own connections are refused and it stalls.
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1920, height: 1080 },
  });
  const page = context.pages()[0] || await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'warning') warnings.push(m.text()); });
  page.setDefaultTimeout(WAIT);
  await page.goto(url);

  const banner = page.locator('#conn');
  const cardOf = (id) => page.locator(`.card[data-device="${id}"]`);
  const field = (id, sel) => cardOf(id).locator(sel);
  const text = async (loc) => (await loc.textContent()).trim();
  // Waits until `fn` (evaluated in the page) holds; its arguments must be serialisable.
  const until = (fn, arg, what) => page.waitForFunction(fn, arg, { timeout: WAIT })
    .catch((e) => { throw new Error(`timed out waiting for ${what}: ${e.message.split('\n')[0]}`); });
  const bannerIs = (state, label) => until(([s, l]) => {
    const b = document.getElementById('conn');
    return b.dataset.state === s && b.textContent === l;
  }, [state, label], `banner "${label}"`);
  const logHas = (needle) => until((n) => [...document.querySelectorAll('#log li')]
    .some((li) => li.textContent.includes(n)), needle, `event log entry "${needle}"`);
  const phaseIs = (id, phase) => until(([i, p]) => {
    const c = document.querySelector(`.card[data-device="${i}"]`);
    return c && c.dataset.phase === p;
  }, [id, phase], `${id} in phase ${phase}`);

  await bannerIs('up', 'connected');
  await checkpoint('ready');

  // The fleet as fed by the Rust side (see tests/tests/kiosk.rs).
  await phaseIs('kiosk-a', 'installing');
  await until(() => document.querySelector('.card[data-device="kiosk-a"] progress')?.value === 57,
    null, 'kiosk-a progress bar at 57');
  await phaseIs('kiosk-b', 'idle');
  await until(() => document.querySelector('.card[data-device="kiosk-c"]')?.dataset.online === 'offline',
    null, 'kiosk-c offline');
  expect(await page.locator('.card').count() === 3, 'exactly three cards (malformed messages make none)');
  const names = await page.locator('.card .name').allTextContents();
  expect(JSON.stringify(names) === '["kiosk-a","kiosk-b","kiosk-c"]', `card names in order: ${names}`);
  expect(await text(field('kiosk-a', '.online')) === '● online', 'kiosk-a online label');
  expect(await text(field('kiosk-c', '.online')) === '○ offline', 'kiosk-c offline label');
  expect(await text(field('kiosk-a', '.phase')) === 'installing', 'kiosk-a phase label');
  expect(await text(field('kiosk-a', '.pct')) === '57 %', 'kiosk-a percentage');
  expect(await text(field('kiosk-a', '.row-version .value')) === '1.4 → 1.5', 'kiosk-a versions');
  expect(await text(field('kiosk-a', '.row-path .value')) === 'delta · 9.0 MiB', 'kiosk-a path and bytes');
  expect(await text(field('kiosk-a', '.row-slot .value')) === 'A (committed)', 'kiosk-a boot slot');
  expect((await text(field('kiosk-a', '.row-hw .value'))).startsWith('qemu-amd64 cip-core-1.0 · agent '),
    'kiosk-a inventory');
  expect(await field('kiosk-a', '.error').isHidden(), 'kiosk-a shows no error');
  expect(await field('kiosk-a', '.row-last').isHidden(), 'no last update during an update');
  expect(await text(field('kiosk-b', '.row-last .value')) === '1.5 TERMINATED at 2026-12-03 09:15 UTC',
    'kiosk-b last update');
  expect(await text(field('kiosk-c', '.row-last .value')) === '1.5 ACTIVATED at 2026-12-03 10:00 UTC',
    'kiosk-c last update');
  expect(await text(field('kiosk-b', '.error')) === '✖ install failed: <b>bad signature</b>',
    'kiosk-b last error, as text');
  expect(await field('kiosk-b', '.error b').count() === 0, 'error text is not parsed as markup');
  expect(await text(field('kiosk-c', '.phase')) === 'idle', 'kiosk-c phase label');
  for (const entry of ['kiosk-a came online', 'kiosk-a is idle', 'kiosk-a idle → downloading (1.4 → 1.5)',
    'kiosk-a downloading → installing (1.4 → 1.5)', 'kiosk-b error: install failed',
    'kiosk-c went offline', 'kiosk-c last update: 1.5 ACTIVATED at 2026-12-03 10:00 UTC',
    'kiosk-b last update: 1.5 TERMINATED']) await logHas(entry);
  expect(warnings.some((w) => w.includes('non-JSON payload')), `warning for non-JSON: ${warnings}`);
  expect(warnings.some((w) => w.includes('malformed payload')), `warning for bad schema: ${warnings}`);
  await page.screenshot({ path: join(shots, 'fleet-1920x1080.png') });
  await page.setViewportSize({ width: 1366, height: 768 });
  await page.screenshot({ path: join(shots, 'fleet-1366x768.png') });
  await page.setViewportSize({ width: 1920, height: 1080 });
  await checkpoint('checked');

  // The broker was stopped.
  await bannerIs('down', 'broker unreachable, reconnecting…');
  await logHas('broker broker unreachable, reconnecting…');
  expect(await page.locator('.card').count() === 3, 'cards kept while the broker is away');
  await page.screenshot({ path: join(shots, 'broker-away-1920x1080.png') });
  await checkpoint('disconnected');

  // The broker is back.
  await bannerIs('up', 'connected');
  expect(await page.locator('.card').count() === 3, 'cards kept after the reconnect');
  const brokerEvents = await page.locator('#log li .ev-dev', { hasText: /^broker$/ }).count();
  expect(brokerEvents === 3, `broker events: connected, unreachable, connected (${brokerEvents})`);
  await checkpoint('reconnected');

  // kiosk-a went on with its update.
  await phaseIs('kiosk-a', 'testing');
  await logHas('kiosk-a installing → rebooting');
  await logHas('kiosk-a rebooting → testing');
  await logHas('kiosk-a trial boot on slot B');
  expect(await text(field('kiosk-a', '.row-slot .value')) === 'B (trial boot)', 'kiosk-a trial slot');
  expect(await text(field('kiosk-b', '.error')) === '✖ install failed: <b>bad signature</b>',
    'kiosk-b still shows its error');
  await page.screenshot({ path: join(shots, 'reconnected-1920x1080.png') });
  await checkpoint('tested');

  // kiosk-a was rolled back and is idle again.
  await phaseIs('kiosk-a', 'idle');
  expect(await text(field('kiosk-a', '.row-last .value')) === '1.5 rolled back at 2026-12-03 11:30 UTC',
    'kiosk-a last update: rolled back');
  expect(await text(field('kiosk-a', '.error')) === '✖ rolled back to slot A (health check `plc-link` failed)',
    'kiosk-a names the reason');
  await logHas('kiosk-a last update: 1.5 rolled back');
  await page.screenshot({ path: join(shots, 'rolled-back-1920x1080.png') });
  expect(pageErrors.length === 0, `no page errors: ${pageErrors}`);
  console.log('@@ done');
} catch (e) {
  console.error(e.stack || String(e));
  console.error(`page warnings: ${JSON.stringify(warnings)}`);
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(process.exitCode || 0);
}
