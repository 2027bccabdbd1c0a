// Access control (issue 14) through the official Flashphoner Web SDK (unmodified) and ours.
//
// Tokens: a server with --jwt-secret. A valid token lets a session publish and another play with
// frames decoded; no token, an expired one, one signed with another secret, one without the
// grant (or without `record` for record: true) give the stream FAILED "Restricted access: <why>"
// and nothing is published; the same bad tokens given at connection time get the session's
// WARN with the reason, then DISCONNECTED (close code 1008); a stream's token overrides the
// session's both ways.
//
// WCS REST hooks: a node HTTP backend on 127.0.0.1 (signature checked with --hook-secret) that
// allows by default, declines publishing `deny-*` with 403 {"info": ...}, renames a play when its
// custom asks, and sleeps past --hook-timeout-ms when its custom says `slow`; a second server's
// backend is a closed port.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import { resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
    REPO_ROOT, TEST_TIMEOUT_MS,
    expectFramesDecoded, fixture, rest, serveSdkPages, sleep, statuses, waitForStatus,
} from './harness.mjs';

const SECRET = 'auth-spec-secret-0123456789';
const HOOK_SECRET = 'hook-spec-secret';
const HOOK_TIMEOUT_MS = 1_000;
/** How long the slow backend sleeps: well past HOOK_TIMEOUT_MS. */
const SLOW_MS = 3_000;

const uniq = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;

// ---------------------------------------------------------------------------------------------
// Tokens

/** An HS256 JWT over `claims`, signed with `secret` (as any backend would mint one). */
function mint(secret, claims) {
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const signed = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
    return `${signed}.${createHmac('sha256', secret).update(signed).digest('base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);

/** A token valid for a minute (or expired an hour ago with `expired`). */
function token(grants, { secret = SECRET, expired = false, sub = 'auth-spec' } = {}) {
    return mint(secret, { sub, exp: expired ? now() - 3600 : now() + 60, grants });
}

/** A token printed by `sluice token` (the server binary's own minting command). */
function cliToken(...args) {
    const bin = resolve(REPO_ROOT, process.env.SLUICE_BIN || 'target/debug/sluice');
    return execFileSync(bin, ['token', '--secret', SECRET, '--ttl', '60', ...args], { encoding: 'utf8' }).trim();
}

// ---------------------------------------------------------------------------------------------
// Pages

/**
 * Record the close code and reason of every WebSocket the page opens (the SDKs keep them),
 * `openMs`: how long it was open (from the open event, i.e. about when the SDK sent `connection`),
 * and `lastMessageMs`: when, after open, its last message (the `fail`) arrived.
 */
const RECORD_WS_CLOSES = `(() => {
    const Native = window.WebSocket;
    window.__wsCloses = [];
    window.WebSocket = class extends Native {
        constructor(...args) {
            super(...args);
            let opened = null;
            let lastMessage = null;
            const since = (t) => (opened === null || t === null ? null : Math.round(t - opened));
            this.addEventListener('open', () => { opened = performance.now(); });
            this.addEventListener('message', () => { lastMessage = performance.now(); });
            this.addEventListener('close', (e) => window.__wsCloses.push({
                code: e.code, reason: e.reason, openMs: since(performance.now()), lastMessageMs: since(lastMessage),
            }));
        }
    };
})();`;

/**
 * A new SDK page (`which`: 'official' or 'ours') in `browser`, its session opened to `server`
 * with `options` for createSession (e.g. `{custom: {token}}`). Returns `{page, status}`:
 * 'ESTABLISHED', or 'DISCONNECTED' when the server refused the connection.
 */
async function openSession(browser, files, server, which, options = {}) {
    const page = await browser.newPage(which);
    await page.addInitScript(RECORD_WS_CLOSES);
    await page.goto(files.url(`/sdk.html?sdk=${which}`));
    const status = await page.evaluate(([url, o]) => sdk.connect(url, o), [server.wsUrl(), options]);
    return { page, status };
}

/** openSession that must be ESTABLISHED; returns the page. */
async function established(browser, files, server, which, options = {}) {
    const { page, status } = await openSession(browser, files, server, which, options);
    assert.equal(status, 'ESTABLISHED', `session ${status}, warnings ${JSON.stringify(await page.evaluate(() => sdk.warnings))}`);
    return page;
}

/**
 * The connection was refused as sluice does it: one WARN (`fail` for `connection`) whose info
 * matches `info`, then DISCONNECTED with no ESTABLISHED, the socket closed with 1008.
 */
async function assertRefused(page, status, info) {
    assert.equal(status, 'DISCONNECTED');
    const { warnings, sessionEvents, closes } = await page.evaluate(() => ({
        warnings: sdk.warnings, sessionEvents: sdk.sessionEvents, closes: window.__wsCloses,
    }));
    assert.deepEqual(sessionEvents, ['DISCONNECTED']);
    assert.equal(warnings.length, 1, JSON.stringify(warnings));
    assert.equal(warnings[0].apiMethod, 'connection');
    if (info instanceof RegExp) assert.match(warnings[0].info, info);
    else assert.equal(warnings[0].info, info);
    assert.equal(closes.length, 1, JSON.stringify(closes));
    assert.equal(closes[0].code, 1008, JSON.stringify(closes));
    return { info: warnings[0].info, openMs: closes[0].openMs, failMs: closes[0].lastMessageMs };
}

/** Publish (or play) `name` and wait for FAILED; returns its info. No PUBLISHING/PLAYING before. */
async function expectFailed(page, key, verb, name, extra = {}) {
    await page.evaluate(([k, v, n, e]) => sdk[v](k, n, e), [key, verb, name, extra]);
    const events = await waitForStatus(page, key, 'FAILED');
    const s = statuses(events);
    assert.ok(!s.includes('PUBLISHING') && !s.includes('PLAYING'), `${key}: ${JSON.stringify(events)}`);
    return events.find((e) => e.status === 'FAILED').info;
}

/** Names of the streams the server has (REST find_all, from loopback). */
async function publishedNames(server) {
    const { status, body } = await rest(server, '/stream/find_all');
    assert.equal(status, 200, JSON.stringify(body));
    return body.map((s) => s.name);
}

async function assertNotPublished(server, name) {
    const names = await publishedNames(server);
    assert.ok(!names.includes(name), `${name} is published: ${JSON.stringify(names)}`);
}

// ---------------------------------------------------------------------------------------------

describe('tokens (--jwt-secret)', () => {
    let fx, files;
    before(async () => {
        fx = await fixture({ serverArgs: ['--jwt-secret', SECRET] });
        files = await serveSdkPages();
    });
    after(async () => {
        await files?.close();
        await fx?.close();
    });

    test('official SDK: a valid session token publishes, another browser\'s plays with frames; stream tokens override', { timeout: TEST_TIMEOUT_MS }, async (t) => {
        await fx.run(async () => {
            const name = `tok-${uniq()}`;
            const pubBrowser = await fx.browser('tok-publisher');
            const viewers = await fx.browser('tok-viewer');
            // The publisher's token comes from `sluice token`, the viewer's from node.
            const publisher = await established(pubBrowser, files, fx.server, 'official',
                { custom: { token: cliToken('--publish', 'tok-*', '--play', '*', '--sub', 'alice') } });
            const viewer = await established(viewers, files, fx.server, 'official',
                { custom: { token: token({ play: ['*'] }) } });

            await publisher.evaluate((n) => sdk.publish('pub', n), name);
            await waitForStatus(publisher, 'pub', 'PUBLISHING');
            await viewer.evaluate((n) => sdk.play('play', n), name);
            await waitForStatus(viewer, 'play', 'PLAYING');
            const frames = await expectFramesDecoded(viewer, '#remote video');
            t.diagnostic(`viewer ${frames.width}x${frames.height} ${frames.codec}, ${frames.decoded} frames in the window`);
            assert.ok((await publishedNames(fx.server)).includes(name));

            // The viewer's session may only play, but a stream token granting publish wins...
            const granted = `tok-stream-${uniq()}`;
            await viewer.evaluate(([n, tk]) => sdk.publish('pub2', n, { custom: { token: tk } }),
                [granted, token({ publish: ['tok-stream-*'] })]);
            await waitForStatus(viewer, 'pub2', 'PUBLISHING');
            // ...and the publisher's session may publish tok-*, but a stream token without that
            // grant wins too.
            const refused = `tok-${uniq()}`;
            const info = await expectFailed(publisher, 'pub3', 'publish', refused,
                { custom: { token: token({ publish: ['other-*'] }) } });
            assert.equal(info, `Restricted access: token grants no publish of ${refused}`);
            await assertNotPublished(fx.server, refused);
            assert.deepEqual(await publisher.evaluate(() => sdk.sessionEvents), ['ESTABLISHED']);
            assert.deepEqual(await viewer.evaluate(() => sdk.sessionEvents), ['ESTABLISHED']);
        })(t);
    });

    test('official SDK: no token, expired, wrong secret, missing grant → FAILED "Restricted access: …", nothing published', { timeout: TEST_TIMEOUT_MS }, async (t) => {
        await fx.run(async () => {
            const b = await fx.browser('tok-refused');
            const id = uniq();

            // No token at all: the session is established, every stream is refused.
            const anon = await established(b, files, fx.server, 'official');
            assert.equal(await expectFailed(anon, 'pub', 'publish', `tok-none-${id}`), 'Restricted access: no token');
            assert.equal(await expectFailed(anon, 'play', 'play', `tok-none-${id}`), 'Restricted access: no token');
            // Bad stream tokens on that session.
            assert.equal(await expectFailed(anon, 'expired', 'publish', `tok-exp-${id}`,
                { custom: { token: token({ publish: true }, { expired: true }) } }), 'Restricted access: token expired');
            assert.equal(await expectFailed(anon, 'forged', 'publish', `tok-forged-${id}`,
                { custom: { token: token({ publish: true }, { secret: 'another-secret-of-some-length' }) } }),
            'Restricted access: bad token signature');

            // A valid session token without the grant for this name, or without record.
            const limited = await established(b, files, fx.server, 'official',
                { custom: { token: token({ publish: ['other-*'], play: ['other-*'] }) } });
            assert.equal(await expectFailed(limited, 'pub', 'publish', `tok-nogrant-${id}`),
                `Restricted access: token grants no publish of tok-nogrant-${id}`);
            const noRecord = await established(b, files, fx.server, 'official',
                { custom: { token: token({ publish: ['tok-*'] }) } });
            assert.equal(await expectFailed(noRecord, 'pub', 'publish', `tok-rec-${id}`, { record: true }),
                `Restricted access: token grants no record of tok-rec-${id}`);

            const names = await publishedNames(fx.server);
            for (const n of ['none', 'exp', 'forged', 'nogrant', 'rec']) {
                assert.ok(!names.includes(`tok-${n}-${id}`), `tok-${n}-${id} published: ${JSON.stringify(names)}`);
            }
            for (const p of [anon, limited, noRecord]) {
                assert.deepEqual(await p.evaluate(() => sdk.sessionEvents), ['ESTABLISHED']);
            }
        })(t);
    });

    for (const which of ['official', 'ours']) {
        test(`${which} SDK: an expired, forged or malformed connection token → WARN "Restricted access: …", DISCONNECTED (1008)`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
            await fx.run(async () => {
                const b = await fx.browser(`tok-connect-${which}`);
                let r = await openSession(b, files, fx.server, which,
                    { custom: { token: token({ publish: true }, { expired: true }) } });
                await assertRefused(r.page, r.status, 'Restricted access: token expired');
                r = await openSession(b, files, fx.server, which,
                    { custom: { token: token({ publish: true }, { secret: 'another-secret-of-some-length' }) } });
                await assertRefused(r.page, r.status, 'Restricted access: bad token signature');
                r = await openSession(b, files, fx.server, which, { custom: { token: 'not-a-jwt' } });
                const { info, failMs, openMs } = await assertRefused(r.page, r.status, /^Restricted access: malformed token/);
                t.diagnostic(`malformed: "${info}"; fail ${failMs} ms, close ${openMs} ms after the socket opened`);
            })(t);
        });
    }
});

// ---------------------------------------------------------------------------------------------
// WCS REST hooks

/**
 * The application server: records every hook request `{method, body, signatureOk, at}`; allows
 * (200 `{}`), except publishStream of `deny-*` (403 {"info": "Publishing denied by backend"});
 * playStream with `custom.playAs` is renamed to it; `custom.slow` sleeps SLOW_MS first.
 */
async function startBackend() {
    const requests = [];
    const server = createServer(async (req, res) => {
        let raw = '';
        for await (const chunk of req) raw += chunk;
        let body = null;
        try { body = JSON.parse(raw); } catch { /* recorded as null */ }
        const signature = req.headers['x-sluice-signature'];
        const want = `sha256=${createHmac('sha256', HOOK_SECRET).update(raw).digest('hex')}`;
        const method = req.url.replace(/^\/hooks\//, '');
        requests.push({ method, httpMethod: req.method, body, signature, signatureOk: signature === want, at: Date.now() });
        res.on('error', () => {});
        const custom = body?.custom || {};
        if (custom.slow) await sleep(SLOW_MS);
        const answer = (status, json) => {
            if (res.destroyed) return;
            res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(json));
        };
        if (method === 'publishStream' && String(body?.name).startsWith('deny-')) {
            return answer(403, { info: 'Publishing denied by backend' });
        }
        if (method === 'playStream' && custom.playAs) return answer(200, { name: custom.playAs });
        answer(200, {});
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    return {
        url: `http://127.0.0.1:${server.address().port}/hooks`,
        requests,
        find: (method, pred = () => true) => requests.filter((q) => q.method === method && pred(q.body || {})),
        close: () => new Promise((r) => {
            server.closeAllConnections();
            server.close(() => r());
        }),
    };
}

/** A loopback port nothing listens on. */
async function closedPort() {
    const s = createServer();
    await new Promise((r) => s.listen(0, '127.0.0.1', r));
    const { port } = s.address();
    await new Promise((r) => s.close(r));
    return port;
}

describe('WCS REST hooks (--hook-url)', () => {
    let fx, files, backend;
    before(async () => {
        backend = await startBackend();
        fx = await fixture({
            serverArgs: ['--hook-url', backend.url, '--hook-secret', HOOK_SECRET, '--hook-timeout-ms', String(HOOK_TIMEOUT_MS)],
        });
        files = await serveSdkPages();
    });
    after(async () => {
        await files?.close();
        await fx?.close();
        await backend?.close();
    });

    test('official SDK: the backend allows connect, publish and a renamed play (frames); sees signed WCS objects', { timeout: TEST_TIMEOUT_MS }, async (t) => {
        await fx.run(async () => {
            const name = `hook-${uniq()}`;
            const alias = `alias-${uniq()}`;
            const publisher = await established(await fx.browser('hook-publisher'), files, fx.server, 'official',
                { custom: { user: 'alice' } });
            const viewer = await established(await fx.browser('hook-viewer'), files, fx.server, 'official',
                { custom: { user: 'bob' } });

            const pubId = await publisher.evaluate((n) => sdk.publish('pub', n, { custom: { note: 'pub' } }), name);
            await waitForStatus(publisher, 'pub', 'PUBLISHING');
            // The viewer asks for a name nobody publishes; the backend renames it to the real one.
            const playId = await viewer.evaluate(([a, n]) => sdk.play('play', a, { custom: { playAs: n } }), [alias, name]);
            await waitForStatus(viewer, 'play', 'PLAYING');
            const frames = await expectFramesDecoded(viewer, '#remote video');
            t.diagnostic(`viewer ${frames.width}x${frames.height} ${frames.codec}, ${frames.decoded} frames in the window`);

            // What the backend saw.
            const connects = backend.find('connect', (b) => b.custom?.user === 'alice' || b.custom?.user === 'bob');
            assert.equal(connects.length, 2, JSON.stringify(connects));
            for (const c of connects) {
                assert.equal(c.httpMethod, 'POST');
                assert.equal(c.body.clientIp, '127.0.0.1');
                assert.ok(typeof c.body.sessionId === 'string' && c.body.sessionId.length > 0, JSON.stringify(c.body));
                assert.ok(Array.isArray(c.body.mediaProviders), JSON.stringify(c.body));
            }
            const [pub] = backend.find('publishStream', (b) => b.name === name);
            assert.ok(pub, `no publishStream hook for ${name}: ${JSON.stringify(backend.requests.map((q) => q.method))}`);
            assert.equal(pub.body.mediaSessionId, pubId);
            assert.equal(pub.body.published, true);
            assert.equal(pub.body.clientIp, '127.0.0.1');
            assert.deepEqual(pub.body.custom, { note: 'pub' });
            assert.equal(pub.body.sessionId, connects.find((c) => c.body.custom.user === 'alice').body.sessionId);
            const [play] = backend.find('playStream', (b) => b.name === alias);
            assert.ok(play, `no playStream hook for ${alias}`);
            assert.equal(play.body.mediaSessionId, playId);
            assert.equal(play.body.published, false);
            assert.equal(play.body.clientIp, '127.0.0.1');
            assert.deepEqual(play.body.custom, { playAs: name });
            // Every request carried a valid X-Sluice-Signature.
            for (const q of backend.requests) {
                assert.ok(q.signatureOk, `bad signature on ${q.method}: ${q.signature}`);
            }
        })(t);
    });

    test('official SDK: publishing declined by the backend → FAILED with its info, nothing published', { timeout: TEST_TIMEOUT_MS }, async (t) => {
        await fx.run(async () => {
            const name = `deny-${uniq()}`;
            const page = await established(await fx.browser('hook-denied'), files, fx.server, 'official');
            assert.equal(await expectFailed(page, 'pub', 'publish', name), 'Publishing denied by backend');
            assert.equal(backend.find('publishStream', (b) => b.name === name).length, 1);
            await assertNotPublished(fx.server, name);
            assert.deepEqual(await page.evaluate(() => sdk.sessionEvents), ['ESTABLISHED']);
        })(t);
    });

    test('official SDK: a backend slower than --hook-timeout-ms declines the stream and the connection in about that time', { timeout: TEST_TIMEOUT_MS }, async (t) => {
        await fx.run(async () => {
            const b = await fx.browser('hook-slow');
            const page = await established(b, files, fx.server, 'official');
            const name = `slow-${uniq()}`;
            let t0 = Date.now();
            const info = await expectFailed(page, 'pub', 'publish', name, { custom: { slow: true } });
            let took = Date.now() - t0;
            t.diagnostic(`publish declined after ${took} ms: ${info}`);
            assert.match(info, /^Application server unavailable/);
            assert.ok(took >= HOOK_TIMEOUT_MS - 100 && took < SLOW_MS, `FAILED after ${took} ms`);
            await assertNotPublished(fx.server, name);
            assert.deepEqual(await page.evaluate(() => sdk.sessionEvents), ['ESTABLISHED']);

            const r = await openSession(b, files, fx.server, 'official', { custom: { slow: true } });
            const { info: why, failMs, openMs } = await assertRefused(r.page, r.status, /^Application server unavailable/);
            t.diagnostic(`connection refused: fail ${failMs} ms, close ${openMs} ms after the socket opened: ${why}`);
            assert.ok(failMs >= HOOK_TIMEOUT_MS - 100 && failMs < SLOW_MS, `refused ${failMs} ms after open`);
        })(t);
    });

    test('official SDK: a backend that is down refuses the connection (WARN, DISCONNECTED 1008)', { timeout: TEST_TIMEOUT_MS }, async (t) => {
        const port = await closedPort();
        const down = await fixture({ serverArgs: ['--hook-url', `http://127.0.0.1:${port}/hooks`] });
        try {
            await down.run(async () => {
                const r = await openSession(await down.browser('hook-down'), files, down.server, 'official');
                const { info, failMs, openMs } = await assertRefused(r.page, r.status, /^Application server unavailable/);
                t.diagnostic(`refused: fail ${failMs} ms, close ${openMs} ms after the socket opened: ${info}`);
                assert.ok(failMs < HOOK_TIMEOUT_MS, `a closed port took ${failMs} ms`);
            })(t);
        } finally {
            await down.close();
        }
    });
});
