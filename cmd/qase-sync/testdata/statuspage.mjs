// Drives the status page in headless Chromium (Debian's chromium through
// playwright-core): log in, look at each page (screenshots), click "Retry"
// on a dead letter and watch the entity's provenance show it synced.
// Run by TestStatusPageBrowser; prints one JSON line of findings.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(process.env.PLAYWRIGHT_DIR + '/');
const { chromium } = require('playwright-core');

const base = process.env.BASE_URL;
const shots = process.env.ARTIFACTS;
const deadID = process.env.DEAD_ID;
const entity = process.env.ENTITY;
const userDataDir = mkdtempSync(join(tmpdir(), 'qase-sync-chromium-'));
const found = {};

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1200, height: 900 },
});
try {
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(15000);
  const shot = (name) => page.screenshot({ path: join(shots, name + '.png'), fullPage: true });

  await page.goto(base + '/admin/ui/');
  found.redirectedToLogin = page.url().endsWith('/admin/ui/login');
  await shot('login');
  await page.fill('input[name=token]', process.env.ADMIN_TOKEN);
  await page.click('button:has-text("Log in")');
  await page.waitForSelector('#queue-depth');
  found.overview = await page.textContent('main');
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'qase_sync_session');
  found.cookie = session ? { secure: session.secure, httpOnly: session.httpOnly, sameSite: session.sameSite } : null;
  await shot('overview');

  await page.click('header a:has-text("Dead letters")');
  await page.waitForSelector('#dead-letter-list');
  found.deadLetters = await page.textContent('#dead-letter-list');
  await shot('deadletters');

  await page.click(`#dead-letter-list a[href="/admin/ui/deadletters/${deadID}"]`);
  await page.waitForSelector('#dead-letter');
  found.detail = await page.textContent('main');
  await shot('deadletter');

  await page.click('button:has-text("Retry")');
  await page.waitForSelector('.flash');
  found.flash = await page.textContent('.flash');
  found.afterRetry = await page.textContent('main');
  await shot('deadletters-after-retry');

  // The entity's provenance: wait until the retried sync shows as applied.
  await page.click('header a:has-text("Explain")');
  await page.fill('input[name=q]', entity);
  await page.click('button:has-text("Explain")');
  const deadline = Date.now() + 20000;
  for (;;) {
    await page.waitForSelector('table.syncs');
    const text = await page.textContent('table.syncs');
    if (text.includes('applied') && text.includes('create')) { found.explain = text; break; }
    if (Date.now() > deadline) { found.explain = text; break; }
    await page.waitForTimeout(300);
    await page.reload();
  }
  await shot('explain');
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log(JSON.stringify(found));
