/**
 * Headless Chromium for page tests: Debian's `chromium` package driven by puppeteer-core (no
 * browser download). Tests skip with a message where it is not installed.
 */
import fs from 'node:fs';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';

export type { Browser, Page };

export const CHROMIUM_CANDIDATES = [process.env.MOI_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter(
  (x): x is string => Boolean(x),
);

export function chromiumPath(): string | null {
  return CHROMIUM_CANDIDATES.find((p) => fs.existsSync(p)) ?? null;
}

export async function launchChromium(executablePath: string): Promise<Browser> {
  return puppeteer.launch({
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-default-apps',
      '--no-first-run',
      '--disable-extensions',
      '--metrics-recording-only',
    ],
  });
}

/** Open a file, collecting console errors and page errors. */
export async function openPage(browser: Browser, file: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()}`));
  // any request other than the file itself would mean the page is not self-contained
  await page.setRequestInterception(true);
  page.on('request', (r) => {
    if (r.url().startsWith('file://') || r.url().startsWith('data:')) void r.continue();
    else {
      errors.push(`network request: ${r.url()}`);
      void r.abort();
    }
  });
  await page.setViewport({ width: 1100, height: 900 });
  await page.goto(`file://${file}`, { waitUntil: 'load' });
  return { page, errors };
}

/**
 * How many distinct colours a screenshot has, decoded by the browser itself (an <img> drawn on
 * a canvas), sampling every 4th pixel. A blank page has 1.
 */
export async function distinctColors(page: Page, png: Uint8Array): Promise<number> {
  const url = `data:image/png;base64,${Buffer.from(png).toString('base64')}`;
  return page.evaluate(async (src: string) => {
    const img = new Image();
    img.src = src;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width;
    c.height = img.height;
    const ctx = c.getContext('2d')!;
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const seen = new Set<number>();
    for (let i = 0; i < d.length; i += 16) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    return seen.size;
  }, url);
}

/** Non-transparent, non-uniform pixels drawn on a canvas (a chart really rendered). */
export async function canvasInk(page: Page, selector: string): Promise<number> {
  return page.$eval(selector, (el) => {
    const c = el as HTMLCanvasElement;
    const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
    let ink = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) ink++;
    return ink;
  });
}
