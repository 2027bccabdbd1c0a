// GET /metrics scraped by a real Prometheus (Debian's /usr/bin/prometheus, scrape interval 1 s):
// our SDK publishes the fake camera, two Player demo pages play it with frames decoded; the
// target is up, `promtool check metrics` accepts the body as it is, and Prometheus sees
// sluice_viewers 2, sluice_streams{kind="webrtc"} 1, sluice_stream_viewers{stream=<name>} 2 and
// two viewer joins; once the players stop, sluice_viewers is 0 again. Skipped when
// /usr/bin/prometheus is not installed (apt-get install prometheus).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
    TEST_TIMEOUT_MS, expectFramesDecoded, fixture, openSdkPage, serveSdkPages, sleep, textOf, waitForStatus, waitForText,
    withTimeout,
} from './harness.mjs';

const PLAYER = '/client/examples/demo/streaming/player/player.html';
const PROMETHEUS = '/usr/bin/prometheus';
const PROMTOOL = '/usr/bin/promtool';
/** How long a value may take to reach Prometheus: a 1 s scrape interval, so a few scrapes. */
const QUERY_TIMEOUT_MS = 10_000;

const havePrometheus = existsSync(PROMETHEUS);

/** A TCP port free on 127.0.0.1 right now (Prometheus takes no port 0). */
function freePort() {
    return new Promise((resolve, reject) => {
        const s = createServer();
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

/**
 * Prometheus on a free loopback port with a fresh TSDB, scraping `target` (host:port) at
 * /metrics every second as job `sluice`. Resolves once /-/ready answers 200. Returns
 * `{url(path), query(expr), log(), stop()}`.
 */
async function startPrometheus(target) {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-prometheus-'));
    const config = join(dir, 'prom.yml');
    writeFileSync(config, [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        '  evaluation_interval: 1s',
        'scrape_configs:',
        '  - job_name: sluice',
        '    metrics_path: /metrics',
        '    static_configs:',
        `      - targets: ['${target}']`,
        '',
    ].join('\n'));
    const port = await freePort();
    const logPath = join(dir, 'prometheus.log');
    const logFile = createWriteStream(logPath);
    const child = spawn(PROMETHEUS, [
        `--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.pipe(logFile, { end: false });
    child.stderr.pipe(logFile, { end: false });
    let exited = null;
    const exit = new Promise((r) => child.once('exit', (code, signal) => r(exited = { code, signal })));
    const log = () => { try { return readFileSync(logPath, 'utf8'); } catch { return '(no log)'; } };
    const url = (path) => `http://127.0.0.1:${port}${path}`;
    const prom = {
        url,
        log,
        /** An instant query: the result vector, as `[{metric, value: Number}]`. */
        async query(expr) {
            const res = await fetch(url(`/api/v1/query?query=${encodeURIComponent(expr)}`));
            const body = await res.json();
            if (body.status !== 'success') throw new Error(`query ${expr}: ${JSON.stringify(body)}`);
            return body.data.result.map((s) => ({ metric: s.metric, value: Number(s.value[1]) }));
        },
        async stop() {
            if (!exited) {
                child.kill('SIGTERM');
                if (!await Promise.race([exit, sleep(5_000).then(() => null)])) {
                    child.kill('SIGKILL');
                    await exit;
                }
            }
            await new Promise((r) => logFile.end(r));
            rmSync(dir, { recursive: true, force: true });
        },
    };
    const until = Date.now() + 15_000;
    for (;;) {
        if (exited) {
            const l = log();
            await prom.stop();
            throw new Error(`prometheus exited before ready (${JSON.stringify(exited)})\n${l}`);
        }
        const ok = await fetch(url('/-/ready')).then((r) => r.ok, () => false);
        if (ok) return prom;
        if (Date.now() > until) {
            const l = log();
            await prom.stop();
            throw new Error(`prometheus not ready within 15 s\n${l}`);
        }
        await sleep(100);
    }
}

/**
 * Poll the instant query `expr` until it returns exactly one sample equal to `want` (with
 * `want === null`: no sample at all, or one equal to 0); the error shows the last result.
 */
async function expectQuery(prom, expr, want, timeout = QUERY_TIMEOUT_MS) {
    const until = Date.now() + timeout;
    let last;
    for (;;) {
        last = await prom.query(expr);
        const ok = want === null
            ? last.length === 0 || (last.length === 1 && last[0].value === 0)
            : last.length === 1 && last[0].value === want;
        if (ok) return last;
        if (Date.now() > until) {
            throw new Error(`Prometheus: ${expr} is ${JSON.stringify(last)} after ${timeout} ms, ` +
                `want ${want === null ? 'no sample (or 0)' : want}`);
        }
        await sleep(250);
    }
}

/** Run promtool check metrics on `text` (stdin): `{code, output}` (stdout and stderr). */
function promtoolCheck(text) {
    const child = spawn(PROMTOOL, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    const done = new Promise((resolve, reject) => {
        child.once('error', reject);
        child.once('close', (code) => resolve({ code, output }));
    });
    child.stdin.end(text);
    return withTimeout(done, 10_000, 'promtool check metrics');
}

let fx;
let files;
let prom;
before(async () => {
    if (!havePrometheus) return;
    fx = await fixture();
    files = await serveSdkPages();
    prom = await startPrometheus(`127.0.0.1:${fx.server.rest}`);
});
after(async () => {
    await prom?.stop();
    await files?.close();
    await fx?.close();
});

test('Prometheus scrapes /metrics: two viewers of one WebRTC stream, then none', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!havePrometheus) {
        t.skip(`${PROMETHEUS} not found: install Debian's prometheus package to run this test`);
        return;
    }
    await fx.run(async () => {
        try {
            const { server } = fx;
            const name = `metrics${Date.now() % 100000}`;

            // Publish only (the SDK page has no preview player, so no viewer of its own).
            const publisher = await openSdkPage(fx, files, 'publisher', 'ours');
            await publisher.evaluate((n) => sdk.publish('pub', n), name);
            await waitForStatus(publisher, 'pub', 'PUBLISHING');

            const openPlayer = async (label) => {
                const page = await (await fx.browser(label)).newPage('player');
                await page.goto(server.webUrl(`${PLAYER}?ws=${server.ws}&streamName=${name}`));
                await page.click('#playBtn');
                await waitForText(page, '#status', 'PLAYING');
                await waitForText(page, '#playBtn', 'Stop');
                return page;
            };
            const players = await Promise.all([openPlayer('viewer1'), openPlayer('viewer2')]);
            const media = await Promise.all(players.map((p) => expectFramesDecoded(p, '#remoteVideo video')));
            t.diagnostic(`viewers decoded ${media.map((m) => `${m.decoded} frames at ${m.width}x${m.height}`).join(', ')}`);

            // The scrape target is up.
            const until = Date.now() + QUERY_TIMEOUT_MS;
            let targets;
            for (;;) {
                targets = (await (await fetch(prom.url('/api/v1/targets'))).json()).data.activeTargets;
                if (targets.length === 1 && targets[0].health === 'up') break;
                if (Date.now() > until) {
                    throw new Error(`scrape target not up after ${QUERY_TIMEOUT_MS} ms: ${JSON.stringify(targets)}`);
                }
                await sleep(250);
            }
            assert.equal(targets[0].scrapeUrl, `http://127.0.0.1:${server.rest}/metrics`);
            assert.equal(targets[0].lastError, '');

            // The body as served passes promtool's lint: exit 0, nothing printed.
            const res = await fetch(`http://127.0.0.1:${server.rest}/metrics`);
            assert.equal(res.status, 200);
            assert.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
            const body = await res.text();
            assert.match(body, new RegExp(`^sluice_stream_viewers\\{stream="${name}"\\} 2$`, 'm'), body);
            const lint = await promtoolCheck(body);
            assert.deepEqual(lint, { code: 0, output: '' }, `promtool check metrics:\n${lint.output}`);

            // What Prometheus stored from its scrapes.
            await expectQuery(prom, 'sluice_viewers', 2);
            await expectQuery(prom, 'sluice_streams{kind="webrtc"}', 1);
            await expectQuery(prom, `sluice_stream_viewers{stream="${name}"}`, 2);
            await expectQuery(prom, 'sluice_viewer_join_seconds_count', 2);
            for (const direction of ['in', 'out']) {
                const [packets] = await prom.query(`sluice_media_packets_total{direction="${direction}"}`);
                assert.ok(packets?.value > 0, `sluice_media_packets_total{direction="${direction}"}: ${JSON.stringify(packets)}`);
            }

            // The players stop: no viewers left, the stream still published.
            await Promise.all(players.map(async (p) => {
                await p.click('#playBtn');
                await waitForText(p, '#status', 'STOPPED');
                assert.equal(await textOf(p, '#playBtn'), 'Start');
            }));
            await expectQuery(prom, 'sluice_viewers', 0);
            await expectQuery(prom, `sluice_stream_viewers{stream="${name}"}`, null);
            await expectQuery(prom, 'sluice_streams{kind="webrtc"}', 1);

            await publisher.evaluate(() => sdk.stop('pub'));
            await waitForStatus(publisher, 'pub', 'UNPUBLISHED');
            await expectQuery(prom, 'sluice_streams{kind="webrtc"}', 0);
        } catch (e) {
            process.stderr.write(`--- prometheus log ---\n${prom.log()}\n`);
            throw e;
        }
    })(t);
});
