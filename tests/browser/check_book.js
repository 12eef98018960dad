// Open pages of the built book in headless Chromium and report what rendered, as JSON on stdout.
//
//   node tests/browser/check_book.js <html-dir> <screenshot-dir> <page> [<page> ...]
//
// Pages are paths relative to <html-dir> (e.g. book/anl_explorer.html). The book is served from
// 127.0.0.1 by a tiny static server in this process; every request to any other host is
// recorded and aborted, so the report shows whether the page needs the network.
// For every element with class `aurora-frame-slider` (aurora.widgets.frame_slider) each slider
// is moved with the keyboard and the shown frame (the <img> the Stack displays) is compared.
// Used by tests/test_browser.py, which makes the assertions.
'use strict';

const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const CONTENT_TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css',
  '.png': 'image/png', '.svg': 'image/svg+xml', '.json': 'application/json',
  '.woff': 'font/woff', '.woff2': 'font/woff2', '.ttf': 'font/ttf', '.eot': 'application/vnd.ms-fontobject',
  '.ico': 'image/x-icon', '.txt': 'text/plain',
};

function serve(root) {
  const server = http.createServer((request, response) => {
    const urlPath = decodeURIComponent(new URL(request.url, 'http://127.0.0.1').pathname);
    let file = path.join(root, urlPath);
    if (!file.startsWith(root)) { response.writeHead(403); response.end(); return; }
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, 'index.html');
    fs.readFile(file, (error, body) => {
      if (error) { response.writeHead(404); response.end('not found'); return; }
      response.writeHead(200, { 'Content-Type': CONTENT_TYPES[path.extname(file)] || 'application/octet-stream' });
      response.end(body);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// The src of the frame each .aurora-frame-slider box shows now (one entry per box).
function shownFrames(page) {
  return page.$$eval('.aurora-frame-slider', (boxes) => boxes.map((box) => {
    const images = Array.from(box.querySelectorAll('img')).filter((image) => image.offsetParent !== null);
    return images.map((image) => image.src).join(' ');
  }));
}

async function checkSliders(page, name, screenshotDir) {
  const boxes = await page.$$('.aurora-frame-slider');
  const results = [];
  for (let boxIndex = 0; boxIndex < boxes.length; boxIndex += 1) {
    const box = boxes[boxIndex];
    await box.scrollIntoViewIfNeeded();
    const handles = await box.$$('.noUi-handle');
    const moves = [];
    for (let handleIndex = 0; handleIndex < handles.length; handleIndex += 1) {
      const before = (await shownFrames(page))[boxIndex];
      const labelBefore = await box.$$eval('.widget-readout', (els) => els.map((el) => el.textContent));
      const shot = path.join(screenshotDir, `${name}--slider${boxIndex}-handle${handleIndex}`);
      await box.screenshot({ path: `${shot}-before.png` });
      await handles[handleIndex].focus();
      await page.keyboard.press('End'); // jump to the last value
      await page.waitForTimeout(300);
      let after = (await shownFrames(page))[boxIndex];
      if (after === before) { // at the end already: go one step back instead
        await page.keyboard.press('ArrowLeft');
        await page.waitForTimeout(300);
        after = (await shownFrames(page))[boxIndex];
      }
      const labelAfter = await box.$$eval('.widget-readout', (els) => els.map((el) => el.textContent));
      await box.screenshot({ path: `${shot}-after.png` });
      const naturalWidths = await box.$$eval('img', (images) => images.map((image) => image.naturalWidth));
      moves.push({ handle: handleIndex, before, after, labelBefore, labelAfter, naturalWidths });
    }
    results.push({ box: boxIndex, handles: handles.length, moves });
  }
  return results;
}

async function checkPage(context, baseUrl, relativePath, screenshotDir) {
  const page = await context.newPage();
  const consoleErrors = [];
  const failedRequests = [];
  page.on('console', (message) => { if (message.type() === 'error') consoleErrors.push(message.text()); });
  page.on('pageerror', (error) => consoleErrors.push(String(error)));
  page.on('requestfailed', (request) => failedRequests.push(request.url()));
  page.on('response', (response) => { if (response.status() >= 400) failedRequests.push(`${response.status()} ${response.url()}`); });
  await page.goto(`${baseUrl}/${relativePath}`, { waitUntil: 'networkidle' });

  const widgetViews = await page.$$eval('script[type="application/vnd.jupyter.widget-view+json"]', (tags) => tags.length);
  let widgetsRendered = 0;
  if (widgetViews > 0) {
    await page.waitForFunction(
      (expected) => document.querySelectorAll('.widget-subarea > *').length >= expected,
      widgetViews, { timeout: 30000 },
    ).catch(() => {});
    widgetsRendered = await page.$$eval('.widget-subarea > *', (els) => els.length);
  }
  await page.waitForFunction(() => Array.from(document.images).every((image) => image.complete), null, { timeout: 30000 }).catch(() => {});
  const images = await page.$$eval('img', (all) => all.map((image) => ({
    src: image.src.slice(0, 80), naturalWidth: image.naturalWidth, visible: image.offsetParent !== null,
  })));
  const widgetManager = await page.evaluate(() => Boolean(
    window.requirejs && window.requirejs.defined && window.requirejs.defined('@jupyter-widgets/html-manager'),
  ));
  const mathElements = await page.$$eval('mjx-container', (els) => els.length);
  const layout = await page.evaluate(() => {
    // Page text must not need horizontal scrolling: the document no wider than the window, and no
    // paragraph, list item, heading or caption of the article wider than the article itself.
    // (Code cells and wide tables may scroll inside their own boxes.)
    const article = document.querySelector('article') || document.body;
    const limit = article.getBoundingClientRect().right + 1;
    const overflowing = Array.from(article.querySelectorAll('p, li, h1, h2, h3, h4, figcaption, dt, dd'))
      .filter((el) => !el.closest('pre, table, .cell_input, .output, .widget-subarea, mjx-container, .highlight'))
      .filter((el) => el.getBoundingClientRect().right > limit)
      .map((el) => el.textContent.trim().slice(0, 80));
    return {
      documentWidth: document.documentElement.scrollWidth, windowWidth: window.innerWidth, overflowing,
    };
  });
  const figures = await page.evaluate(() => {
    // Every image a cell outputs sits in a <figure> with a non-empty <figcaption>; every precomputed
    // slider box (aurora.widgets) has a caption widget.
    const outputImages = Array.from(document.querySelectorAll('.cell_output img'))
      .filter((image) => !image.closest('.widget-subarea, .aurora-frame-slider'));
    const uncaptioned = outputImages.filter((image) => {
      const figure = image.closest('figure');
      const caption = figure && figure.querySelector('figcaption');
      return !caption || caption.textContent.trim().length === 0;
    }).map((image) => image.src.slice(-40));
    const sliders = Array.from(document.querySelectorAll('.aurora-frame-slider'));
    const slidersWithoutCaption = sliders.filter((box) => {
      const caption = box.querySelector('.aurora-slider-caption');
      return !caption || caption.textContent.trim().length === 0;
    }).length;
    return { outputImages: outputImages.length, uncaptioned, sliders: sliders.length, slidersWithoutCaption };
  });
  // sphinxcontrib-bibtex renders {cite:p} as <span class="bibtex-citation">(<a href="bibliography.html#id..">..</a>)</span>
  const citations = await page.$$eval('a', (links) => links.filter((link) => link.closest('.bibtex-citation')
    || /bibliography\.html#/.test(link.getAttribute('href') || '')).length);
  const tableLinks = await page.$$eval('article table a.reference.internal',
    (links) => links.map((link) => link.getAttribute('href')));
  const name = relativePath.replace(/[\/.]/g, '_');
  await page.screenshot({ path: path.join(screenshotDir, `${name}.png`), fullPage: true });
  const sliders = await checkSliders(page, name, screenshotDir);
  await page.close();
  return {
    page: relativePath, widgetViews, widgetsRendered, widgetManager, images, mathElements, sliders,
    consoleErrors, failedRequests, layout, figures, citations, tableLinks,
  };
}

// WCAG contrast ratio of two CSS colours (rgb()/rgba() strings), transparency ignored.
function contrastInPage(page, selector) {
  return page.evaluate((sel) => {
    const luminance = (rgb) => {
      const [r, g, b] = rgb.match(/[\d.]+/g).slice(0, 3).map(Number).map((v) => {
        const c = v / 255;
        return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
      });
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const background = (el) => {
      for (let node = el; node; node = node.parentElement) {
        const colour = getComputedStyle(node).backgroundColor;
        if (colour && !/rgba\(.*,\s*0\)$/.test(colour) && colour !== 'transparent') return colour;
      }
      return 'rgb(255, 255, 255)';
    };
    return Array.from(document.querySelectorAll(sel)).slice(0, 20).map((el) => {
      const fg = luminance(getComputedStyle(el).color);
      const bg = luminance(background(el));
      return (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    });
  }, selector);
}

// Open a page in the theme's dark mode: text and slider labels must keep their contrast; screenshot it.
async function checkDarkMode(context, baseUrl, relativePath, screenshotDir) {
  const page = await context.newPage();
  await page.addInitScript(() => { localStorage.setItem('mode', 'dark'); localStorage.setItem('theme', 'dark'); });
  await page.goto(`${baseUrl}/${relativePath}`, { waitUntil: 'networkidle' });
  await page.waitForTimeout(500);
  const theme = await page.evaluate(() => document.documentElement.dataset.theme);
  const text = await contrastInPage(page, 'article p');
  const widgetLabels = await contrastInPage(page, '.widget-label, .widget-readout, .aurora-slider-caption p');
  const name = relativePath.replace(/[\/.]/g, '_');
  await page.screenshot({ path: path.join(screenshotDir, `${name}--dark.png`), fullPage: true });
  await page.close();
  return { page: relativePath, theme, text, widgetLabels };
}

async function main() {
  const [htmlDir, screenshotDir, ...pages] = process.argv.slice(2);
  if (!htmlDir || !screenshotDir || pages.length === 0) {
    throw new Error('usage: node check_book.js <html-dir> <screenshot-dir> <page> [<page> ...]');
  }
  const root = path.resolve(htmlDir);
  fs.mkdirSync(screenshotDir, { recursive: true });
  const server = await serve(root);
  const baseUrl = `http://127.0.0.1:${server.address().port}`;
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'aurora-book-chromium-'));
  const externalRequests = [];
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS, viewport: { width: 1280, height: 900 },
  });
  try {
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(baseUrl) || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
      externalRequests.push(url);
      return route.abort();
    });
    const results = [];
    for (const relativePath of pages) results.push(await checkPage(context, baseUrl, relativePath, screenshotDir));
    const darkMode = [];
    for (const relativePath of pages.slice(0, 2)) darkMode.push(await checkDarkMode(context, baseUrl, relativePath, screenshotDir));
    process.stdout.write(JSON.stringify({ baseUrl, externalRequests, pages: results, darkMode }, null, 1));
  } finally {
    await context.close();
    server.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

main().catch((error) => { console.error(error); process.exit(1); });
