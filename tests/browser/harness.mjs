// Shared harness of the browser tests: the sluice server on random ports, headless Chromium
// with a fake camera, a tiny static file server, helpers to watch pages, count decoded frames
// and check the ICE path media took, and ffmpeg publishing over RTMP. tests/topology/lib.mjs
// uses the browser, page, path and RTMP helpers too.
//
// The tests need a network namespace with only `lo` (Chromium gathers ICE candidates on
// 127.0.0.1 only there, with --allow-loopback-in-peer-connection): run them with
// tests/browser/run.sh, which sets that up.
//
// Environment: SLUICE_BIN (server binary, default target/debug/sluice under the repo root),
// CHROMIUM (default /usr/bin/chromium), RUST_LOG (server log filter), KEEP_LOGS=1 (print the
// server log path even when the tests pass).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';

import { chromium } from 'playwright-core';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const TESTS_DIR = join(REPO_ROOT, 'tests');

/** How long a page may take to reach a status (connect, ICE, DTLS on loopback take < 1 s). */
export const STATUS_TIMEOUT_MS = 15_000;
/** Window over which decoded frames must keep rising; the fake camera sends 20 fps. */
export const FRAME_WINDOW_MS = 2_000;
/** Frames that must be decoded in FRAME_WINDOW_MS: 20 fps gives ~40, allow for a slow start. */
export const MIN_FRAMES_IN_WINDOW = 15;
/** Upper bound for one test, so a hang fails instead of blocking the run. */
export const TEST_TIMEOUT_MS = 60_000;

/**
 * Chromium's command line: headless, quiet, a fake camera and microphone that need no click,
 * ICE candidates on loopback allowed (the loopback-only namespace of run.sh needs that).
 */
export const CHROMIUM_ARGS = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
    '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
];

/** Resolve after `ms` milliseconds. */
export function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
}

/** Reject with `what` if `promise` has not settled within `ms`. */
export function withTimeout(promise, ms, what) {
    let timer;
    const t = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    });
    return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------
// The server

/**
 * Start sluice on random ports, wait for its ready line and return
 * `{ws, rest, http, media, turn, logPath, webUrl(path), wsUrl(path), restUrl(path), log(),
 * stop()}`. Its stderr goes to a log file. `extraArgs` are appended to the command line (a
 * `--turn-port` or `--no-turn` there replaces the default random TURN port, `--rtmp-port` or
 * `--no-rtmp` the random RTMP port, `--hls-port` or `--no-hls` the random HLS port).
 */
export async function startServer({ extraArgs = [] } = {}) {
    const bin = resolve(REPO_ROOT, process.env.SLUICE_BIN || 'target/debug/sluice');
    if (!existsSync(bin)) {
        throw new Error(`server binary ${bin} not found: run cargo build (or set SLUICE_BIN)`);
    }
    const work = mkdtempSync(join(tmpdir(), 'sluice-browser-'));
    const logPath = join(work, 'server.log');
    const logFile = createWriteStream(logPath);
    // The default bind address and the detected public address (in the loopback-only namespace
    // of run.sh that is 127.0.0.1, with a warning), as users run it. Random ports only because
    // several servers may run at once; the working folder (and so the generated certificate in
    // its data/) is the test's own.
    const args = [
        '--ws-port', '0', '--rest-port', '0', '--http-port', '0', '--media-port', '0',
        '--wss-port', '0', '--https-port', '0', '--rest-https-port', '0',
        '--media-dir', join(work, 'media'), '--records-dir', join(work, 'records'),
    ];
    if (!extraArgs.includes('--static-dir')) {
        args.push('--static-dir', join(REPO_ROOT, 'static'));
    }
    if (!extraArgs.some((a) => a === '--no-turn' || a.startsWith('--turn-port'))) {
        args.push('--turn-port', '0'); // several servers may run at once (never the fixed 3478)
    }
    if (!extraArgs.some((a) => a === '--no-rtmp' || a.startsWith('--rtmp-port'))) {
        args.push('--rtmp-port', '0'); // nor the fixed RTMP port 1935
    }
    if (!extraArgs.some((a) => a === '--no-hls' || a.startsWith('--hls-port'))) {
        args.push('--hls-port', '0'); // nor the fixed HLS port 8082
    }
    args.push(...extraArgs);
    const env = {
        ...process.env,
        RUST_LOG: process.env.RUST_LOG || 'info,sluice_actors=debug,str0m=warn,dimpl=warn,actix_server=warn',
    };
    const child = spawn(bin, args, { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stderr.pipe(logFile);
    let exited = null;
    const exit = new Promise((r) => child.once('exit', (code, signal) => {
        exited = { code, signal };
        r(exited);
    }));

    const ready = new Promise((resolveReady, rejectReady) => {
        let buf = '';
        child.stdout.on('data', (chunk) => {
            buf += chunk;
            const line = /^sluice ready [^\n]*\n/m.exec(buf); // a whole line
            if (line) {
                // key=port pairs: ws, rest, http, media, and turn and rtmp when they run.
                const ports = Object.fromEntries([...line[0].matchAll(/(\w+)=(\d+)/g)].map((m) => [m[1], +m[2]]));
                if (ports.ws && ports.rest && ports.http && ports.media) resolveReady(ports);
                else rejectReady(new Error(`unexpected ready line: ${line[0].trim()}`));
            }
        });
        exit.then((e) => rejectReady(new Error(`server exited before ready (${JSON.stringify(e)})`)));
        child.once('error', rejectReady);
    });
    let ports;
    try {
        ports = await withTimeout(ready, 10_000, 'server ready line');
    } catch (e) {
        child.kill('SIGKILL');
        await exit;
        logFile.end();
        throw new Error(`${e.message}\n--- server log ---\n${readLog(logPath)}`);
    }

    return {
        ...ports,
        logPath,
        webUrl: (path) => `http://127.0.0.1:${ports.http}${path}`,
        wsUrl: (path = '') => `ws://127.0.0.1:${ports.ws}${path}`,
        restUrl: (path) => `http://127.0.0.1:${ports.rest}/rest-api${path}`,
        log: () => readLog(logPath),
        exited: () => exited,
        async stop({ keepLog = false } = {}) {
            if (!exited) {
                child.kill('SIGTERM');
                const done = await Promise.race([exit, sleep(3_000).then(() => null)]);
                if (!done) {
                    child.kill('SIGKILL');
                    await exit;
                }
            }
            await new Promise((r) => logFile.end(r));
            if (!keepLog) {
                rmSync(work, { recursive: true, force: true });
            }
        },
    };
}

function readLog(path) {
    try {
        return readFileSync(path, 'utf8');
    } catch {
        return '(no server log)';
    }
}

// ---------------------------------------------------------------------------------------------
// Chromium

/**
 * Count every RTCPeerConnection a page creates (window.__pcs), whichever SDK made it: wrapping
 * the constructor before any page script runs leaves the SDKs themselves unmodified.
 */
const TRACK_PEER_CONNECTIONS = `(() => {
    const Native = window.RTCPeerConnection;
    if (!Native || Native.__tracked) return;
    window.__pcs = [];
    class TrackedPeerConnection extends Native {
        constructor(...args) { super(...args); window.__pcs.push(this); }
    }
    TrackedPeerConnection.__tracked = true;
    window.RTCPeerConnection = TrackedPeerConnection;
})();`;

/**
 * A headless Chromium of its own (fresh profile, fake camera and microphone). Returns
 * `{context, newPage(name), consoleLog(), close()}`; console output and page errors of every
 * page are kept, prefixed with `label` and the page name, for failure reports. Every page
 * counts its RTCPeerConnections in window.__pcs (see inboundMedia, selectedPairs).
 *
 * `args` replaces CHROMIUM_ARGS as the command line; `ignoreHTTPSErrors` makes the context
 * accept self-signed certificates, as a user clicking through the warning would;
 * `executablePath` replaces $CHROMIUM (a wrapper that starts Chromium in a network namespace).
 */
export async function launchBrowser(label = 'browser', { args = CHROMIUM_ARGS, ignoreHTTPSErrors = false, executablePath } = {}) {
    const profile = mkdtempSync(join(tmpdir(), 'sluice-chromium-'));
    const context = await chromium.launchPersistentContext(profile, {
        executablePath: executablePath || process.env.CHROMIUM || '/usr/bin/chromium',
        headless: true,
        args,
        ignoreHTTPSErrors,
        viewport: { width: 1000, height: 800 },
        timeout: 30_000,
    });
    context.setDefaultTimeout(STATUS_TIMEOUT_MS);
    await context.addInitScript(TRACK_PEER_CONNECTIONS);
    const lines = [];
    const watch = (page, name) => {
        page.on('console', (m) => lines.push(`[${label}/${name}] ${m.type()}: ${m.text()}`));
        page.on('pageerror', (e) => lines.push(`[${label}/${name}] pageerror: ${e.message}`));
    };
    let n = 0;
    return {
        context,
        async newPage(name = `page${++n}`) {
            const blank = context.pages().find((p) => p.url() === 'about:blank' && !p.__used);
            const page = blank || await context.newPage();
            page.__used = true;
            watch(page, name);
            return page;
        },
        consoleLog: () => lines.join('\n'),
        async close() {
            await context.close().catch(() => {});
            rmSync(profile, { recursive: true, force: true });
        },
    };
}

// ---------------------------------------------------------------------------------------------
// A static file server for test pages (the official SDK is served from node_modules)

const MIME = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css' };

/**
 * Serve files on 127.0.0.1 (random port): `routes` maps a URL path prefix to a folder. Returns
 * `{url(path), close()}`.
 */
export async function serveFiles(routes) {
    const server = createServer((req, res) => {
        const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
        for (const [prefix, dir] of Object.entries(routes)) {
            if (!path.startsWith(prefix)) continue;
            const file = resolve(dir, '.' + sep + path.slice(prefix.length));
            if (!file.startsWith(resolve(dir) + sep) || !existsSync(file) || !statSync(file).isFile()) break;
            res.writeHead(200, { 'content-type': MIME[extname(file)] || 'application/octet-stream' });
            createReadStream(file).pipe(res);
            return;
        }
        res.writeHead(404).end('not found');
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address();
    return {
        url: (path) => `http://127.0.0.1:${port}${path}`,
        close: () => new Promise((r) => {
            server.closeAllConnections();
            server.close(() => r());
        }),
    };
}

// ---------------------------------------------------------------------------------------------
// Page helpers

/** Wait until the element's text is exactly `text`; the error names what was there instead. */
export async function waitForText(page, selector, text, timeout = STATUS_TIMEOUT_MS) {
    try {
        await page.waitForFunction(
            ([sel, want]) => document.querySelector(sel)?.textContent.trim() === want,
            [selector, text], { timeout, polling: 50 });
    } catch (e) {
        const got = await page.evaluate((sel) => document.querySelector(sel)?.textContent, selector).catch(() => '?');
        throw new Error(`${selector}: expected "${text}", still "${got}" after ${timeout} ms`);
    }
}

/** Text of an element, trimmed. */
export function textOf(page, selector) {
    return page.$eval(selector, (el) => el.textContent.trim());
}

/** Samples the fake microphone's 48 kHz audio must render in FRAME_WINDOW_MS: half the rate. */
export const MIN_AUDIO_SAMPLES_IN_WINDOW = 48_000 * (FRAME_WINDOW_MS / 1000) / 2;

/**
 * Inbound stats of every open peer connection of the page, summed: `{framesDecoded,
 * framesReceived, codec, audioPackets, audioSamples, audioEnergy}` (codec: mimeType of the first
 * inbound video; audioSamples: totalSamplesReceived, which only grows while something plays the
 * audio track).
 */
export function inboundMedia(page) {
    return page.evaluate(async () => {
        const r = { framesDecoded: 0, framesReceived: 0, codec: null, audioPackets: 0, audioSamples: 0, audioEnergy: 0 };
        for (const pc of window.__pcs || []) {
            if (pc.connectionState === 'closed') continue;
            const stats = await pc.getStats();
            stats.forEach((s) => {
                if (s.type !== 'inbound-rtp') return;
                if (s.kind === 'video') {
                    r.framesDecoded += s.framesDecoded || 0;
                    r.framesReceived += s.framesReceived || 0;
                    if (!r.codec && s.codecId && stats.get(s.codecId)) r.codec = stats.get(s.codecId).mimeType;
                } else if (s.kind === 'audio') {
                    r.audioPackets += s.packetsReceived || 0;
                    r.audioSamples += s.totalSamplesReceived || 0;
                    r.audioEnergy += s.totalAudioEnergy || 0;
                }
            });
        }
        return r;
    });
}

/** States of the page's peer connections, e.g. ['connected', 'closed']. */
export function peerConnectionStates(page) {
    return page.evaluate(() => (window.__pcs || []).map((pc) => pc.connectionState));
}

/**
 * The selected candidate pair of every open peer connection of the page, from getStats: `{state,
 * localType, localAddress, protocol, relayProtocol, relayUrl, remoteType, remoteAddress,
 * remotePort, bytesReceived, bytesSent, gathered}` (local candidate type, address and protocol,
 * the relay protocol and TURN URL of a relay candidate, the remote address and port the browser
 * sends to, bytes both ways, and the distinct types of the local candidates gathered).
 */
export function selectedPairs(page) {
    return page.evaluate(async () => {
        const out = [];
        for (const pc of window.__pcs || []) {
            if (pc.connectionState === 'closed') continue;
            const stats = await pc.getStats();
            const gathered = [];
            let pair = null;
            stats.forEach((s) => {
                if (s.type === 'local-candidate') gathered.push(s.candidateType);
                if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
            });
            const local = pair && stats.get(pair.localCandidateId);
            const remote = pair && stats.get(pair.remoteCandidateId);
            out.push({
                state: pc.connectionState,
                localType: local?.candidateType,
                localAddress: local?.address,
                protocol: local?.protocol,
                relayProtocol: local?.relayProtocol,
                relayUrl: local?.url,
                remoteType: remote?.candidateType,
                remoteAddress: remote?.address,
                remotePort: remote?.port,
                bytesReceived: pair?.bytesReceived,
                bytesSent: pair?.bytesSent,
                gathered: [...new Set(gathered)],
            });
        }
        return out;
    });
}

/**
 * Assert that `pairs` (from selectedPairs) holds at least one pair and, for each, `check(p, s)`
 * (`s`: the pair as JSON, for messages), then that media went both ways. Returns `pairs`.
 * The failure messages start with `who`.
 */
export function assertPairs(pairs, who, check) {
    assert.ok(pairs.length >= 1, `${who}: no open peer connection`);
    for (const p of pairs) {
        const s = JSON.stringify(p);
        check(p, s);
        assert.ok(p.bytesReceived > 0 && p.bytesSent > 0, `${who}: ${s}`);
    }
    return pairs;
}

/**
 * Every pair of `pairs` (from selectedPairs) goes through a TURN relay over `transport` ('udp'
 * or 'tcp'), with relay candidates only gathered. Returns `pairs`.
 */
export function assertRelayed(pairs, transport, who) {
    return assertPairs(pairs, who, (p, s) => {
        assert.equal(p.localType, 'relay', `${who}: ${s}`);
        assert.equal(p.relayProtocol, transport, `${who}: ${s}`);
        assert.deepEqual(p.gathered, ['relay'], `${who}: only relay candidates: ${s}`);
    });
}

/**
 * Wait for a `<video>` under `selector` with a decoded picture (videoWidth > 0), then require
 * framesDecoded to rise by MIN_FRAMES_IN_WINDOW over FRAME_WINDOW_MS. With `audio: true`, the
 * element must also carry an audio track that plays (rendered samples and energy rising in the
 * same window). Returns the numbers.
 */
/**
 * Wait (up to 15 s) until the page sends a video layer `width` pixels wide: a simulcast
 * publisher's big layer, which a loaded machine's Chromium starts seconds late.
 */
export function waitForOutboundWidth(page, width) {
    return page.waitForFunction(async (w) => {
        for (const pc of window.__pcs || []) {
            for (const s of (await pc.getStats()).values()) {
                if (s.type === 'outbound-rtp' && s.kind === 'video' && s.frameWidth === w && s.framesSent > 0) return true;
            }
        }
        return false;
    }, width, { timeout: 15_000, polling: 100 });
}

export async function expectFramesDecoded(page, selector, { audio = false } = {}) {
    await page.waitForFunction(
        (sel) => { const v = document.querySelector(sel); return v && v.videoWidth > 0; },
        selector, { timeout: STATUS_TIMEOUT_MS, polling: 100 })
        .catch(async () => {
            const s = await inboundMedia(page);
            throw new Error(`no picture in ${selector} within ${STATUS_TIMEOUT_MS} ms (stats ${JSON.stringify(s)})`);
        });
    const el = await page.$eval(selector, (v) => ({
        width: v.videoWidth,
        height: v.videoHeight,
        tracks: v.srcObject ? v.srcObject.getTracks().map((t) => t.kind).sort() : [],
        muted: v.muted,
    }));
    if (audio && !el.tracks.includes('audio')) {
        const s = await inboundMedia(page);
        throw new Error(`${selector} plays tracks [${el.tracks}] only: no audio track ` +
            `(${s.audioPackets} audio packets received by the peer connection)`);
    }
    const before = await inboundMedia(page);
    await sleep(FRAME_WINDOW_MS);
    const after = await inboundMedia(page);
    const decoded = after.framesDecoded - before.framesDecoded;
    if (!(decoded >= MIN_FRAMES_IN_WINDOW)) {
        throw new Error(`framesDecoded rose by ${decoded} in ${FRAME_WINDOW_MS} ms ` +
            `(${before.framesDecoded} -> ${after.framesDecoded}), want >= ${MIN_FRAMES_IN_WINDOW}`);
    }
    const audioSamples = after.audioSamples - before.audioSamples;
    if (audio && !(audioSamples >= MIN_AUDIO_SAMPLES_IN_WINDOW && after.audioEnergy > before.audioEnergy)) {
        throw new Error(`audio not rendered: ${audioSamples} samples in ${FRAME_WINDOW_MS} ms ` +
            `(want >= ${MIN_AUDIO_SAMPLES_IN_WINDOW}), energy ${before.audioEnergy} -> ${after.audioEnergy}`);
    }
    return {
        width: el.width, height: el.height, tracks: el.tracks, muted: el.muted,
        before: before.framesDecoded, after: after.framesDecoded, decoded, codec: after.codec, audioSamples,
    };
}

/**
 * The video in `selector` reaches `want` ([width, height]) within 10 s of the first frames
 * (`frames`, from expectFramesDecoded). A simulcast publisher's best layer is what a viewer
 * plays once it flows, but on a loaded machine Chromium may start sending it seconds after the
 * small one, and the viewer starts on what flows first: the server moves it up.
 */
export async function expectVideoSize(t, page, selector, frames, want) {
    const reached = await page.waitForFunction(([sel, [w, h]]) => {
        const v = document.querySelector(sel);
        return v && v.videoWidth === w && v.videoHeight === h;
    }, [selector, want], { timeout: 10000, polling: 100 }).then(() => true, () => false);
    const size = await page.$eval(selector, (v) => [v.videoWidth, v.videoHeight]);
    if (size[0] !== frames.width || size[1] !== frames.height) {
        t.diagnostic(`${selector}: first frames ${frames.width}x${frames.height}, then ${size[0]}x${size[1]}`);
    }
    assert.ok(reached, `${selector} at ${size[0]}x${size[1]} 10 s after its first frames `
        + `(${frames.width}x${frames.height}), want ${want[0]}x${want[1]}`);
}

/** POST to the REST API; returns {status, body}. */
export async function rest(server, path, body = {}) {
    const res = await fetch(server.restUrl(path), {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = text; }
    return { status: res.status, body: json };
}

// ---------------------------------------------------------------------------------------------
// Test scaffolding

/**
 * The fixture of one spec file: a server (`serverArgs` appended to its command line) plus
 * browsers, all torn down in `close()`. `run(fn)` wraps a test body so that a failure prints
 * the server log and the browsers' console first (not with `{dumpOnFailure: false}`).
 *
 * A test's own resources end with it, passed or failed: the browsers it opened with
 * `browser()` are closed, and so is what it handed to `defer`, the body's second argument
 * (`fn(t, defer)`, `defer(async () => ...)`: run last registered first). Left running after a
 * failed assertion, a test's Chromium decoders and re-encoding sources took the next tests' CPU
 * on a 2-core machine and failed them too (sessions 15 and 16). A teardown that fails fails a
 * test that passed; after a failure, the failure is what the test reports.
 */
export async function fixture({ serverArgs = [] } = {}) {
    const server = await startServer({ extraArgs: serverArgs });
    const browsers = [];
    let failed = false;
    return {
        server,
        async browser(label) {
            const b = await launchBrowser(label);
            browsers.push(b);
            return b;
        },
        run(fn, { dumpOnFailure = true } = {}) {
            return async (t) => {
                const opened = browsers.length;
                const cleanups = [];
                let passed = false;
                try {
                    await fn(t, (cleanup) => cleanups.push(cleanup));
                    passed = true;
                } catch (e) {
                    if (!dumpOnFailure) throw e; // e.g. a todo test, expected to fail for now
                    failed = true;
                    const consoleLog = browsers.map((b) => b.consoleLog()).filter(Boolean).join('\n');
                    process.stderr.write(`\n=== ${t.name} failed: ${e.message}\n` +
                        `--- browser console ---\n${consoleLog}\n` +
                        `--- server log (${server.logPath}) ---\n${server.log()}\n=== end\n`);
                    throw e;
                } finally {
                    const errors = [];
                    for (const cleanup of cleanups.reverse()) {
                        await Promise.resolve().then(cleanup).catch((e) => errors.push(e));
                    }
                    await Promise.all(browsers.splice(opened).map((b) => b.close()));
                    if (errors.length && !passed) {
                        process.stderr.write(`teardown of the failed test: ${errors.map((e) => e.message).join('; ')}\n`);
                    } else if (errors.length) {
                        throw errors[0];
                    }
                }
            };
        },
        async close() {
            await Promise.all(browsers.map((b) => b.close()));
            const keepLog = failed || !!process.env.KEEP_LOGS;
            await server.stop({ keepLog });
            if (keepLog) process.stderr.write(`server log kept: ${server.logPath}\n`);
        },
    };
}

// ---------------------------------------------------------------------------------------------
// The SDK test page (pages/sdk.html + pages/driver.js), for either SDK

/** Serve pages/ plus both SDKs: the official bundle at /websdk/, ours (static/client) at /ours/. */
export function serveSdkPages() {
    return serveFiles({
        '/websdk/': join(TESTS_DIR, 'node_modules', '@flashphoner', 'websdk'),
        '/ours/': join(REPO_ROOT, 'static', 'client'),
        '/': join(TESTS_DIR, 'browser', 'pages'),
    });
}

/**
 * A suite of SDK-page tests: a server fixture and the SDK pages, started before the suite's
 * tests and closed after them. Returns `{ fx, files }`, filled in once `before` has run.
 */
export function sdkSuite() {
    const suite = { fx: null, files: null };
    before(async () => {
        suite.fx = await fixture();
        suite.files = await serveSdkPages();
    });
    after(async () => {
        await suite.files?.close();
        await suite.fx?.close();
    });
    return suite;
}

/**
 * Open the SDK test page in a browser of its own, with `which` SDK ('official' or 'ours'), and
 * connect a session to the fixture's server (WebSocket path `wsPath`). Resolves once ESTABLISHED.
 * `beforeLoad(page)` runs first (e.g. to route the page's WebSocket).
 */
export async function openSdkPage(fx, files, label, which, wsPath = '', beforeLoad = null) {
    const page = await (await fx.browser(label)).newPage(which);
    if (beforeLoad) await beforeLoad(page);
    await page.goto(files.url(`/sdk.html?sdk=${which}`));
    const status = await page.evaluate((url) => sdk.connect(url), fx.server.wsUrl(wsPath));
    if (status !== 'ESTABLISHED') throw new Error(`${label}: session ${status}`);
    return page;
}

/** Wait until the page's stream `key` has reported `status`; returns its recorded statuses. */
export async function waitForStatus(page, key, status) {
    try {
        await page.waitForFunction(([k, s]) => (sdk.events[k] || []).some((e) => e.status === s),
            [key, status], { timeout: STATUS_TIMEOUT_MS, polling: 50 });
    } catch {
        const events = await page.evaluate((k) => sdk.events[k], key);
        throw new Error(`stream ${key}: no ${status} within ${STATUS_TIMEOUT_MS} ms, events ${JSON.stringify(events)}`);
    }
    return page.evaluate((k) => sdk.events[k], key);
}

/** Wait until the page's stream `key` has received `count` stream events; returns them all. */
export async function waitForStreamEvents(page, key, count) {
    try {
        await page.waitForFunction(([k, n]) => (sdk.streamEvents[k] || []).length >= n,
            [key, count], { timeout: STATUS_TIMEOUT_MS, polling: 50 });
    } catch {
        const events = await page.evaluate((k) => sdk.streamEvents[k], key);
        throw new Error(`stream ${key}: want ${count} stream events, got ${JSON.stringify(events)}`);
    }
    return page.evaluate((k) => sdk.streamEvents[k], key);
}

/** The status names of recorded events. */
export function statuses(events) {
    return events.map((e) => e.status);
}

// ---------------------------------------------------------------------------------------------
// Signalling capture

/**
 * Record the page's WebSocket frames, parsed: an array of `{dir: 'sent'|'received', message,
 * data}` that grows as frames pass (non-JSON frames are kept as `{dir, raw}`).
 */
export function recordSignalling(page) {
    const frames = [];
    page.on('websocket', (ws) => {
        const add = (dir) => (f) => {
            const raw = f.payload.toString();
            try {
                const { message, data } = JSON.parse(raw);
                frames.push({ dir, message, data });
            } catch {
                frames.push({ dir, raw });
            }
        };
        ws.on('framesent', add('sent'));
        ws.on('framereceived', add('received'));
    });
    return frames;
}

/** Resolve once `predicate(frames)` holds, polling; reject after `timeout` ms. */
export async function waitForFrames(frames, predicate, what, timeout = STATUS_TIMEOUT_MS) {
    const until = Date.now() + timeout;
    while (!predicate(frames)) {
        if (Date.now() > until) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
        await sleep(50);
    }
}

// ---------------------------------------------------------------------------------------------
// RTMP

/**
 * ffmpeg encoding a 640x360 30 fps test pattern (H.264 baseline, a keyframe every `gop` frames)
 * and a 440 Hz tone (AAC) in real time for 60 s, published to the RTMP `url` (e.g.
 * rtmp://127.0.0.1:1935/live/name). Returns the
 * child process, with `stderrText` (what ffmpeg printed so far) and `exitInfo` (`{code, signal}`
 * once it exited, else null); kill it when done.
 */
export function publishRtmp(url, { gop = 30 } = {}) {
    const args = [
        '-hide_banner', '-loglevel', 'error', '-re',
        '-f', 'lavfi', '-i', 'testsrc=size=640x360:rate=30',
        '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100',
        '-t', '60',
        '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-profile:v', 'baseline',
        '-pix_fmt', 'yuv420p', '-g', String(gop), '-bf', '0',
        '-c:a', 'aac', '-ac', '2',
        '-f', 'flv', url,
    ];
    const child = spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderrText = '';
    child.stderr.on('data', (d) => { child.stderrText += d; });
    child.exitInfo = null;
    child.once('exit', (code, signal) => { child.exitInfo = { code, signal }; });
    return child;
}

/**
 * The test IP camera (tests/support/rtsp_camera.py: GStreamer's RTSP server) on a free port of
 * 127.0.0.1: `{port, clients(), child}`; kill `child` when done.
 */
export function startCamera() {
    const child = spawn('/usr/bin/python3', [`${REPO_ROOT}/tests/support/rtsp_camera.py`, '0'],
        { stdio: ['ignore', 'pipe', 'inherit'] });
    let clients = 0;
    return new Promise((resolve, reject) => {
        const lines = createInterface({ input: child.stdout });
        lines.on('line', (l) => {
            const ready = /^ready (\d+)/.exec(l);
            if (ready) resolve({ port: +ready[1], clients: () => clients, child });
            if (l.startsWith('client ')) clients += 1;
        });
        child.once('exit', (code) => reject(new Error(`RTSP camera exited (${code})`)));
        setTimeout(() => reject(new Error('RTSP camera not ready in 10 s')), 10_000);
    });
}
