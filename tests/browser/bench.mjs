// Dashboard frame-time benchmark: opens the overview in headless Chromium against a running
// `iiot run` (scripts/browser-test.sh --bench starts one with 10,000 devices every second),
// waits for the stream to settle, then for --seconds records every requestAnimationFrame delta,
// every long task (PerformanceObserver 'longtask') and the page's JS heap (CDP
// Performance.getMetrics). Prints a report and writes it to --out/bench.json.
// Exit code 0 whether or not the target is met: this is a measurement, not a test.

import { chromium } from 'playwright-core';
import { writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import os from 'node:os';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const base = arg('--base', 'http://127.0.0.1:8080');
const out = arg('--out', 'target/browser');
const seconds = Number(arg('--seconds', '30'));
const warmup = Number(arg('--warmup', '10'));
const command = arg('--command', 'node tests/browser/bench.mjs');
await mkdir(out, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const quantile = (sorted, q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null);
const round = (x) => (x == null ? null : Math.round(x * 10) / 10);

try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  const cdp = await context.newCDPSession(page);
  await cdp.send('Performance.enable');
  const heap = async () => {
    const { metrics } = await cdp.send('Performance.getMetrics');
    const get = (n) => metrics.find((m) => m.name === n)?.value ?? null;
    return { used_mb: round(get('JSHeapUsedSize') / 2 ** 20), total_mb: round(get('JSHeapTotalSize') / 2 ** 20), nodes: get('Nodes') };
  };

  await page.goto(`${base}/`);
  await page.waitForSelector('#conn[data-state="live"]', { timeout: 30000 });
  console.log(`overview live; warming up ${warmup} s`);
  await page.waitForTimeout(warmup * 1000);
  const heapBefore = await heap();
  const loadBefore = os.loadavg().map((x) => round(x));
  const before = await page.evaluate(() => ({ received: window.iiot.live.tick.received, devices: window.iiot.live.tick.devicesSeen }));

  await page.evaluate(() => {
    const b = (window.__bench = { deltas: [], longtasks: [] });
    let last = performance.now();
    const frame = (t) => {
      b.deltas.push(t - last);
      last = t;
      if (!b.stop) requestAnimationFrame(frame);
    };
    requestAnimationFrame((t) => { last = t; requestAnimationFrame(frame); });
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) b.longtasks.push(e.duration);
    }).observe({ type: 'longtask' });
    b.start = { reloads: window.iiot.live.reloads, resyncs: window.iiot.live.resyncs, dropped: window.iiot.live.tick.dropped };
  });
  console.log(`measuring ${seconds} s`);
  await page.waitForTimeout(seconds * 1000);
  const raw = await page.evaluate(() => {
    window.__bench.stop = true;
    const l = window.iiot.live;
    return {
      ...window.__bench,
      received: l.tick.received,
      devices: l.tick.devicesSeen,
      latency: l.tick.latency,
      dropped: l.tick.dropped - window.__bench.start.dropped,
      reloads: l.reloads - window.__bench.start.reloads,
      resyncs: l.resyncs - window.__bench.start.resyncs,
    };
  });
  const heapAfter = await heap();
  const loadAfter = os.loadavg().map((x) => round(x));
  await page.screenshot({ path: join(out, 'bench-overview.png') });

  const d = [...raw.deltas].sort((a, b) => a - b);
  const lt = raw.longtasks;
  const report = {
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, memory_gb: Math.round(os.totalmem() / 2 ** 30), platform: `${os.platform()} ${os.release()}` },
    chromium: browser.version(),
    command,
    seconds,
    frames: {
      count: d.length,
      median_ms: round(quantile(d, 0.5)),
      p99_ms: round(quantile(d, 0.99)),
      max_ms: round(d[d.length - 1]),
      over_50ms: d.filter((x) => x > 50).length,
      over_33ms: d.filter((x) => x > 33.4).length,
    },
    long_tasks: { count: lt.length, max_ms: round(Math.max(0, ...lt)), total_ms: round(lt.reduce((a, b) => a + b, 0)) },
    heap_before: heapBefore,
    heap_after: heapAfter,
    load_average_1_5_15: { before: loadBefore, after: loadAfter },
    stream: {
      readings_per_s: Math.round((raw.received - before.received) / seconds),
      devices_seen: raw.devices,
      event_to_browser_ms: raw.latency,
      dropped_by_server: raw.dropped,
      alert_resyncs: raw.resyncs,
      full_reloads: raw.reloads,
    },
    page_errors: errors,
    target_no_frame_over_50ms: d.length > 0 && d.every((x) => x <= 50),
  };
  await writeFile(join(out, 'bench.json'), JSON.stringify(report, null, 2));
  console.log(JSON.stringify(report, null, 2));
} finally {
  await browser.close();
}
