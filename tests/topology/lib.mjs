// Shared code of the topology tests (tests/topology/run.sh): Chromium as a user runs it against
// a server on another host, and the page flows the scenarios share. The browser itself, the
// candidate-pair stats and ffmpeg come from tests/browser/harness.mjs.
//
// These scripts run inside the client network namespace that run.sh builds; the server runs in
// the server namespace, started with no flags at all. What the scripts know of the server comes
// from run.sh in the environment:
//   TOPO_URL         the "Open the demo:" URL the server printed, e.g. https://198.18.0.1:8888/
//   TOPO_HOST        the address the scenario expects the server to advertise
//   TOPO_SERVER_LOG  the server's log (its stderr), printed when a test fails
//
// Unlike tests/browser, Chromium runs WITHOUT --allow-loopback-in-peer-connection (its ICE
// candidates are on the veth address 198.18.0.2) and never with a flag that makes an insecure
// origin secure: the pages are https with the server's self-signed certificate, accepted by the
// browser context (`ignoreHTTPSErrors`) as a user clicking through the warning would.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import {
    CHROMIUM_ARGS as BROWSER_TEST_ARGS, STATUS_TIMEOUT_MS, assertPairs, expectFramesDecoded, launchBrowser,
    selectedPairs, sleep, textOf,
} from '../browser/harness.mjs';

export const STREAMER = '/client/examples/demo/streaming/streamer/streamer.html';
export const PLAYER = '/client/examples/demo/streaming/player/player.html';
export const FIREWALL = '/client/examples/demo/streaming/firewall-traversal/firewall-traversal.html';

/** The server's fixed default ports a user meets. */
export const PORTS = { https: 8888, wss: 8443, restHttps: 8444, media: 31000, turn: 3478, rtmp: 1935 };

/** Upper bound for one test (a flow takes 5-15 s here). */
export const TEST_TIMEOUT_MS = 60_000;

/** tests/browser's Chromium flags minus --allow-loopback-in-peer-connection. */
const CHROMIUM_ARGS = BROWSER_TEST_ARGS.filter((a) => a !== '--allow-loopback-in-peer-connection');
for (const a of CHROMIUM_ARGS) {
    assert.ok(!/loopback|insecure-origin|ignore-certificate/.test(a), `forbidden Chromium flag ${a}`);
}

/**
 * Wait until the element's text is `want`; fail at once when it shows a status that will not
 * turn into it (FAILED, DISCONNECTED), with the page's #info text.
 */
export async function waitForText(page, selector, want, timeout = STATUS_TIMEOUT_MS) {
    const bad = ['FAILED', 'DISCONNECTED'].filter((s) => s !== want);
    let got;
    try {
        got = await page.waitForFunction(([sel, w, b]) => {
            const t = document.querySelector(sel)?.textContent.trim();
            return (t === w || b.includes(t)) && t;
        }, [selector, want, bad], { timeout, polling: 50 }).then((h) => h.jsonValue());
    } catch {
        got = await page.evaluate((sel) => document.querySelector(sel)?.textContent, selector).catch(() => '?');
        throw new Error(`${selector}: expected "${want}", still "${got}" after ${timeout} ms`);
    }
    if (got !== want) {
        const info = await page.evaluate(() => document.getElementById('info')?.textContent.trim()).catch(() => '?');
        const status = await page.evaluate(() => document.getElementById('status')?.textContent.trim()).catch(() => '?');
        throw new Error(`${selector}: expected "${want}", got "${got}" (#status "${status}", #info "${info}")`);
    }
}

/** What run.sh passes in. */
export function env() {
    const url = process.env.TOPO_URL;
    const host = process.env.TOPO_HOST;
    assert.ok(url, 'TOPO_URL not set: run tests/topology/run.sh');
    assert.ok(host, 'TOPO_HOST not set: run tests/topology/run.sh');
    return { url, host, serverLog: process.env.TOPO_SERVER_LOG };
}

/**
 * A headless Chromium of its own (tests/browser/harness.mjs launchBrowser: fresh profile, fake
 * camera and microphone) with CHROMIUM_ARGS above and self-signed certificates accepted.
 * Returns `{context, newPage(name), consoleLog(), close()}`.
 */
function launchTopoBrowser(label) {
    return launchBrowser(label, { args: CHROMIUM_ARGS, ignoreHTTPSErrors: true });
}

/**
 * The fixture of one scenario file: two browsers (a publishing user and a viewing user), reused
 * by every test of the file (each test opens pages of its own and closes them). `run(fn)` wraps
 * a test body so that a failure prints the browsers' console and the server log first.
 */
export async function topoFixture() {
    const { serverLog } = env();
    const browsers = [];
    const fx = {
        pub: null,
        view: null,
        run(fn) {
            return async (t) => {
                const pages = [];
                const track = (b) => ({ ...b, newPage: async (name) => { const p = await b.newPage(name); pages.push(p); return p; } });
                try {
                    await fn(t, { pub: track(fx.pub), view: track(fx.view) });
                } catch (e) {
                    let log = '(no server log)';
                    try { log = readFileSync(serverLog, 'utf8'); } catch { /* none */ }
                    const lines = log.split('\n');
                    const consoleLog = browsers.map((b) => b.consoleLog()).filter(Boolean).join('\n');
                    process.stderr.write(`\n=== ${t.name} failed: ${e.stack || e.message}\n` +
                        `--- browser console ---\n${consoleLog}\n` +
                        `--- server log (${serverLog}), last 150 lines ---\n${lines.slice(-150).join('\n')}\n=== end\n`);
                    throw e;
                } finally {
                    await Promise.all(pages.map((p) => p.close().catch(() => {})));
                }
            };
        },
        async close() {
            await Promise.all(browsers.map((b) => b.close()));
        },
    };
    fx.pub = await launchTopoBrowser('pub');
    fx.view = await launchTopoBrowser('view');
    browsers.push(fx.pub, fx.view);
    return fx;
}

/**
 * Every open peer connection of the page talks straight to the server's media port on the
 * advertised address `host` (the browser's own candidate on the veth, 198.18.0.2), media both
 * ways. Returns the pairs (harness.mjs selectedPairs).
 */
export async function assertDirectTo(page, host, who) {
    return assertPairs(await selectedPairs(page), who, (p, s) => {
        assert.equal(p.state, 'connected', `${who}: ${s}`);
        assert.equal(p.remoteAddress, host, `${who}: media not sent to the advertised address: ${s}`);
        assert.equal(p.remotePort, PORTS.media, `${who}: ${s}`);
    });
}

/**
 * A REST call over https from the client's namespace, with the API key the NAT scenario's server
 * was given (`key: null` sends none). Answers `{status, body}`.
 */
export async function rest(browser, origin, path, body, { key = process.env.TOPO_API_KEY } = {}) {
    const url = `https://${new URL(origin).hostname}:${PORTS.restHttps}/rest-api${path}`;
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    const res = body === undefined
        ? await browser.context.request.get(url, { headers })
        : await browser.context.request.post(url, { data: body, headers });
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = text; }
    return { status: res.status(), body: json };
}

/** The origin of the printed URL, asserted to be https on `host`, default https port, path /. */
export function checkPrintedUrl(url, host) {
    const u = new URL(url);
    assert.equal(u.protocol, 'https:', `printed URL ${url} is not https`);
    assert.equal(u.hostname, host, `printed URL ${url} is not on ${host}`);
    assert.equal(u.port, String(PORTS.https), `printed URL ${url}: port`);
    assert.equal(u.pathname, '/', `printed URL ${url}: path`);
    return u.origin;
}

// ---------------------------------------------------------------------------------------------
// Flows

/**
 * The index page at the printed URL → its Streamer link → Start: PUBLISHING, the camera preview
 * (a secure context: getUserMedia works) and the server's preview with frames and sound. Returns
 * `{page, name}`, still publishing.
 */
export async function publishFromIndex(t, browser, url, host) {
    const origin = new URL(url).origin;
    const page = await browser.newPage('streamer');
    const res = await page.goto(url);
    assert.equal(res.status(), 200, `index ${url}`);
    const links = await page.$$eval('#demos a', (as) => as.map((a) => [a.id, a.href]));
    for (const id of ['demo-streamer', 'demo-player', 'demo-firewall-traversal']) {
        const link = links.find(([i]) => i === id);
        assert.ok(link, `index has no ${id}: ${JSON.stringify(links)}`);
        assert.ok(link[1].startsWith(`${origin}/`), `${id} leaves the origin: ${link[1]}`);
    }
    await page.click('#demo-streamer');
    await page.waitForURL(`${origin}${STREAMER}`);
    assert.equal(await page.evaluate(() => window.isSecureContext), true, 'the https page is not a secure context');
    await page.waitForFunction(() => document.getElementById('url').value !== '');
    const wsUrl = await page.inputValue('#url');
    const m = new RegExp(`^wss://${host.replace(/\./g, '\\.')}:${PORTS.wss}/([a-z0-9]{8})$`).exec(wsUrl);
    assert.ok(m, `Streamer URL field ${wsUrl}, want wss://${host}:${PORTS.wss}/<name>`);
    const name = m[1];

    await page.click('#publishBtn');
    await waitForText(page, '#status', 'PUBLISHING');
    await waitForText(page, '#previewStatus', 'PLAYING');
    assert.equal(await textOf(page, '#info'), '');
    const local = await page.$eval('#localVideo video', (v) => v.videoWidth);
    assert.ok(local > 0, 'no camera picture in the local preview');
    const media = await expectFramesDecoded(page, '#remoteVideo video', { audio: true });
    t.diagnostic(`streamer preview ${media.width}x${media.height} ${media.codec}, ${media.decoded} frames, ` +
        `${media.audioSamples} audio samples in the window`);
    const pairs = await assertDirectTo(page, host, 'streamer');
    t.diagnostic(`streamer paths: ${pairs.map((p) => `${p.localType} ${p.protocol} ${p.localAddress} -> ${p.remoteAddress}:${p.remotePort}`).join('; ')}`);
    return { page, name };
}

/** The Player page on `origin` plays `name`: PLAYING with frames (and sound unless `audio: false`). */
export async function playOnPlayerPage(t, browser, origin, host, name, { audio = true } = {}) {
    const page = await browser.newPage('player');
    await page.goto(`${origin}${PLAYER}?streamName=${encodeURIComponent(name)}`);
    assert.equal(await page.inputValue('#url'), `wss://${host}:${PORTS.wss}`);
    assert.equal(await page.inputValue('#streamName'), name);
    await page.click('#playBtn');
    await waitForText(page, '#status', 'PLAYING');
    const media = await expectFramesDecoded(page, '#remoteVideo video', { audio });
    t.diagnostic(`player ${media.width}x${media.height} ${media.codec}, ${media.decoded} frames` +
        (audio ? `, ${media.audioSamples} audio samples` : '') + ' in the window');
    const pairs = await assertDirectTo(page, host, 'player');
    t.diagnostic(`player path: ${pairs.map((p) => `${p.localType} ${p.protocol} ${p.localAddress} -> ${p.remoteAddress}:${p.remotePort}`).join('; ')}`);
    return { page, media };
}

/** Streamer publishes from the index page; a second user's Player plays; Stop ends both. */
export async function streamerAndPlayer(t, fx, url, host) {
    const { page: streamer, name } = await publishFromIndex(t, fx.pub, url, host);
    const { page: player } = await playOnPlayerPage(t, fx.view, new URL(url).origin, host, name);
    await streamer.click('#publishBtn');
    await waitForText(streamer, '#status', 'UNPUBLISHED');
    await waitForText(player, '#status', 'STOPPED');
    assert.equal(await textOf(player, '#info'), 'Stopped by publisher stop');
}

// ---------------------------------------------------------------------------------------------
// RTMP (ffmpeg publishing: harness.mjs publishRtmp)

/**
 * Wait until the REST API lists `name` as published; returns its stream object. `encoder` (from
 * harness.mjs publishRtmp) ends the wait early when it exits, and its output goes in the error.
 */
export async function waitPublished(browser, origin, name, encoder) {
    const end = Date.now() + 15_000;
    let last = null;
    while (Date.now() < end) {
        last = await rest(browser, origin, '/stream/find', { name, published: true });
        if (last.status === 200 && last.body?.length) return last.body[0];
        if (encoder?.exitInfo) break;
        await sleep(200);
    }
    throw new Error(`${name} not published over RTMP: last REST answer ${JSON.stringify(last)}, ` +
        `ffmpeg ${JSON.stringify(encoder?.exitInfo)}: ${encoder?.stderrText}`);
}
