// What every browser script shares: its settings from the environment, assertions, and
// Debian's headless Chromium in a throwaway profile with a screenshot helper.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

export function assert(condition, message) {
  if (!condition) throw new Error('assertion failed: ' + message);
}

// Starts Chromium; `shot(name)` saves a full-page screenshot into SCREENSHOT_DIR,
// `errors` collects the page's script errors, and `run(steps)` runs the steps, keeps a
// `failure` screenshot when one throws, and closes the browser either way. `args` are
// more Chromium flags.
export async function openBrowser({ args = [] } = {}) {
  const shots = env('SCREENSHOT_DIR');
  mkdirSync(shots, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'traffsure-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', ...args],
    viewport: { width: 1360, height: 900 },
  });
  const page = context.pages()[0] || await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  const run = async (steps) => {
    try {
      await steps();
    } catch (error) {
      await shot('failure').catch(() => {});
      console.error(error);
      process.exitCode = 1;
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    }
  };
  return { context, page, errors, shot, shots, run };
}
