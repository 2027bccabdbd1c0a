// Recording from Chromium's fake camera: with our Stream Recording page and with the official
// Web SDK (record: true), 10 s each; the recorded file plays in Chromium's <video> (duration
// 9-11 s, frames rendered, seekable) and ffprobe reports H.264 + Opus with that duration.
// Faults: the publisher's browser closed abruptly mid-recording leaves a complete, playable file;
// the server killed with SIGKILL 8 s into a recording leaves a file that plays >= 6 s. A VP8
// publisher's recording (vp08 in MP4) plays too.
// KEEP_RECORDINGS=<dir> keeps a copy of each file probed.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';

import {
    sdkSuite,
    fixture, openSdkPage, rest, waitForOutboundWidth, waitForStatus, waitForText,
} from './harness.mjs';

const RECORDING = '/client/examples/demo/streaming/stream_recording/recording.html';
const RECORD_MS = 10_000;
/** Recording tests run longer than the harness's default: 10 s of media, then playback. */
const TIMEOUT_MS = 120_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const suite = sdkSuite();

/** ffprobe a file: codec names in stream order and the container duration. */
function probe(path) {
    const out = execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name:format=duration',
        '-of', 'json', path], { encoding: 'utf8' });
    const j = JSON.parse(out);
    return { codecs: j.streams.map((s) => s.codec_name), duration: Number(j.format.duration) };
}

/** Download a recording from the server's web port and ffprobe it. */
async function probeServed(server, name) {
    const res = await fetch(server.webUrl(`/client/records/${encodeURIComponent(name)}`));
    assert.equal(res.status, 200, `GET /client/records/${name}`);
    const dir = mkdtempSync(join(tmpdir(), 'sluice-rec-'));
    try {
        const path = join(dir, 'file.mp4');
        const bytes = Buffer.from(await res.arrayBuffer());
        writeFileSync(path, bytes);
        if (process.env.KEEP_RECORDINGS) {
            writeFileSync(join(process.env.KEEP_RECORDINGS, name), bytes);
        }
        return probe(path);
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
}

/**
 * Play the <video> matching `selector` (muted) until 3 s in, then seek near the end. Returns
 * {duration, width, frames (rendered), seeked}. `src` replaces the element's source if given.
 */
async function playVideo(page, selector, src) {
    return page.evaluate(async ([sel, src]) => {
        const v = document.querySelector(sel);
        const waitFor = (ev, ms) => new Promise((res, rej) => {
            const t = setTimeout(() => rej(new Error(`no ${ev} within ${ms} ms (error ${v.error && v.error.message})`)), ms);
            v.addEventListener(ev, () => { clearTimeout(t); res(); }, { once: true });
            v.addEventListener('error', () => { clearTimeout(t); rej(new Error(`video error: ${v.error && v.error.message}`)); }, { once: true });
        });
        if (src) {
            v.src = src;
        }
        if (v.readyState < 1) {
            await waitFor('loadedmetadata', 10_000);
        }
        v.muted = true;
        await v.play();
        const until = Date.now() + 10_000;
        while (v.currentTime < 3 && Date.now() < until) {
            await new Promise((r) => setTimeout(r, 100));
        }
        const played = v.currentTime;
        const frames = v.getVideoPlaybackQuality().totalVideoFrames;
        const seeking = waitFor('seeked', 5_000);
        v.currentTime = Math.max(0, v.duration - 1);
        await seeking;
        v.pause();
        return { duration: v.duration, width: v.videoWidth, height: v.videoHeight, played, frames, seekedTo: v.currentTime };
    }, [selector, src || null]);
}

function checkPlayback(p, min, max) {
    assert.ok(p.duration >= min && p.duration <= max, `duration ${p.duration} not in ${min}-${max} s`);
    assert.ok(p.width > 0, `no picture: ${JSON.stringify(p)}`);
    assert.ok(p.played >= 3, `playback stalled at ${p.played} s`);
    // 3 s at the fake camera's frame rate; allow a slow start.
    assert.ok(p.frames >= 30, `only ${p.frames} frames rendered`);
    assert.ok(p.seekedTo >= p.duration - 1.5, `seek landed at ${p.seekedTo}`);
}

function checkProbe(p, min, max) {
    assert.deepEqual(p.codecs, ['h264', 'opus']);
    assert.ok(p.duration >= min && p.duration <= max, `ffprobe duration ${p.duration} not in ${min}-${max} s`);
}

/** Wait until the server has no recording in progress (the recorder finished its file). */
async function noRecordings(server, ms = 20_000) {
    const until = Date.now() + ms;
    for (;;) {
        const r = await rest(server, '/recorder/find_all');
        if (r.status === 200 && r.body.length === 0) return;
        if (Date.now() > until) throw new Error(`recordings still running: ${JSON.stringify(r.body)}`);
        await sleep(100);
    }
}

test('Recording page records 10 s; the file plays in <video> and probes as H.264 + Opus', { timeout: TIMEOUT_MS }, async (t) => {
    await suite.fx.run(async () => {
        const { server } = suite.fx;
        const page = await (await suite.fx.browser('recording')).newPage('recording');
        await page.goto(server.webUrl(`/?ws=${server.ws}`));
        await page.click('#demo-stream-recording');
        await page.waitForURL(server.webUrl(`${RECORDING}?ws=${server.ws}`));
        await page.waitForFunction(() => document.getElementById('url').value !== '');
        const name = (await page.inputValue('#url')).split('/')[3];

        await page.click('#publishBtn');
        await waitForText(page, '#status', 'PUBLISHING');
        await waitForText(page, '#publishBtn', 'Stop');
        const found = await rest(server, '/stream/find', { name });
        assert.equal(found.body[0].record, true);
        const recordName = found.body[0].recordName;
        assert.match(recordName, new RegExp(`^${name}-\\d{13}\\.mp4$`));
        await sleep(RECORD_MS);
        await page.click('#publishBtn');
        await waitForText(page, '#status', 'UNPUBLISHED');

        // The page shows the file and a download link to /client/records/<recordName>.
        const link = await page.$eval('#link', (a) => a.href);
        assert.equal(link, server.webUrl(`/client/records/${recordName}`));
        assert.equal(await page.$eval('#downloadDiv', (d) => d.hidden), false);
        const played = await playVideo(page, '#recVideo');
        t.diagnostic(`page playback ${JSON.stringify(played)}`);
        checkPlayback(played, 9, 11);
        const p = await probeServed(server, recordName);
        t.diagnostic(`ffprobe ${JSON.stringify(p)}`);
        checkProbe(p, 9, 11);
    })(t);
});

test('official Web SDK with record: true; getRecordInfo() names a file that plays', { timeout: TIMEOUT_MS }, async (t) => {
    await suite.fx.run(async () => {
        const { server } = suite.fx;
        const name = `websdk-rec-${Date.now().toString(36)}`;
        const page = await openSdkPage(suite.fx, suite.files, 'websdk-recording', 'official');
        await page.evaluate((n) => {
            sdk.create('rec', { name: n, record: true, display: document.getElementById('local') });
            sdk.streams.rec.publish();
        }, name);
        await waitForStatus(page, 'rec', 'PUBLISHING');
        const during = await page.evaluate(() => sdk.streams.rec.getRecordInfo());
        assert.match(during, new RegExp(`^${name}-\\d{13}\\.mp4$`), 'recordName arrives with PUBLISHING');
        await sleep(RECORD_MS);
        await page.evaluate(() => sdk.stop('rec'));
        await waitForStatus(page, 'rec', 'UNPUBLISHED');
        const recordName = await page.evaluate(() => sdk.streams.rec.getRecordInfo());
        assert.equal(recordName, during);

        await page.evaluate(() => {
            const v = document.createElement('video');
            v.id = 'recorded';
            document.body.appendChild(v);
        });
        const played = await playVideo(page, '#recorded', server.webUrl(`/client/records/${recordName}`));
        t.diagnostic(`official SDK recording playback ${JSON.stringify(played)}`);
        checkPlayback(played, 9, 11);
        checkProbe(await probeServed(server, recordName), 9, 11);
    })(t);
});

test('VP8 publisher (official SDK, H.264 stripped): the vp08 + Opus MP4 plays in <video>', { timeout: TIMEOUT_MS }, async (t) => {
    await suite.fx.run(async () => {
        const { server } = suite.fx;
        const name = `websdk-vp8-${Date.now().toString(36)}`;
        const page = await openSdkPage(suite.fx, suite.files, 'websdk-vp8', 'official');
        await page.evaluate((n) => {
            sdk.create('rec', { name: n, record: true, stripCodecs: 'H264', display: document.getElementById('local') });
            sdk.streams.rec.publish();
        }, name);
        await waitForStatus(page, 'rec', 'PUBLISHING');
        assert.equal((await rest(server, '/stream/find', { name })).body[0].videoCodec, 'VP8');
        await sleep(6_000);
        await page.evaluate(() => sdk.stop('rec'));
        await waitForStatus(page, 'rec', 'UNPUBLISHED');
        const recordName = await page.evaluate(() => sdk.streams.rec.getRecordInfo());
        await page.evaluate(() => {
            const v = document.createElement('video');
            v.id = 'recorded';
            document.body.appendChild(v);
        });
        const played = await playVideo(page, '#recorded', server.webUrl(`/client/records/${recordName}`));
        t.diagnostic(`VP8 recording playback ${JSON.stringify(played)}`);
        checkPlayback(played, 5, 7);
        const p = await probeServed(server, recordName);
        assert.deepEqual(p.codecs, ['vp8', 'opus']);
        assert.ok(p.duration >= 5 && p.duration <= 7, `ffprobe duration ${p.duration}`);
    })(t);
});

test('publisher browser closed abruptly mid-recording: a complete, playable file', { timeout: TIMEOUT_MS }, async (t) => {
    await suite.fx.run(async () => {
        const { server } = suite.fx;
        const publisher = await suite.fx.browser('vanishing-publisher');
        const page = await publisher.newPage('recording');
        await page.goto(server.webUrl(`${RECORDING}?ws=${server.ws}`));
        await page.waitForFunction(() => document.getElementById('url').value !== '');
        const name = (await page.inputValue('#url')).split('/')[3];
        await page.click('#publishBtn');
        await waitForText(page, '#status', 'PUBLISHING');
        const recordName = (await rest(server, '/stream/find', { name })).body[0].recordName;
        // Six seconds from when the browser sends its big simulcast layer: the server's video
        // goes out (and the file begins) once every announced layer has shown up, or after 2 s
        // (SIMULCAST_SETTLE). A loaded CI run's Chromium sent the big one 1.4 s late, and the
        // file held 4.8 s of the 6.
        await waitForOutboundWidth(page, 640);
        await sleep(6_000);
        await publisher.close(); // no unpublish, no goodbye
        await noRecordings(server);

        const viewer = await (await suite.fx.browser('viewer')).newPage('viewer');
        await viewer.goto(server.webUrl(`${RECORDING}?ws=${server.ws}`));
        await viewer.evaluate(() => {
            const v = document.createElement('video');
            v.id = 'recorded';
            document.body.appendChild(v);
        });
        const played = await playVideo(viewer, '#recorded', server.webUrl(`/client/records/${recordName}`));
        t.diagnostic(`after the publisher vanished: ${JSON.stringify(played)}`);
        checkPlayback(played, 5, 7);
        checkProbe(await probeServed(server, recordName), 5, 7);
    })(t);
});

/** Serve one file over HTTP with Range support (as a browser seeking in a video needs). */
async function serveFileWithRanges(path) {
    const data = readFileSync(path);
    const server = createServer((req, res) => {
        const m = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range || '');
        if (!m) {
            res.writeHead(200, { 'content-type': 'video/mp4', 'accept-ranges': 'bytes', 'content-length': data.length });
            res.end(data);
            return;
        }
        const start = m[1] === '' ? Math.max(0, data.length - Number(m[2])) : Number(m[1]);
        const end = m[1] !== '' && m[2] !== '' ? Math.min(Number(m[2]), data.length - 1) : data.length - 1;
        res.writeHead(206, { 'content-type': 'video/mp4', 'accept-ranges': 'bytes',
            'content-range': `bytes ${start}-${end}/${data.length}`, 'content-length': end - start + 1 });
        res.end(data.subarray(start, end + 1));
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    return {
        url: `http://127.0.0.1:${server.address().port}/file.mp4`,
        close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
    };
}

/** The pid of the server whose work folder holds `logPath` (its command line names it). */
function serverPid(logPath) {
    const records = join(dirname(logPath), 'records');
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
        try {
            const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
            if (cmd.includes('--records-dir') && cmd.includes(records)) return Number(pid);
        } catch { /* gone */ }
    }
    throw new Error(`no server process for ${records}`);
}

test('server killed with SIGKILL 8 s into a recording: the file plays >= 6 s', { timeout: TIMEOUT_MS }, async (t) => {
    const own = await fixture();
    try {
        await own.run(async () => {
            const { server } = own;
            const page = await (await own.browser('sigkill')).newPage('recording');
            await page.goto(server.webUrl(`${RECORDING}?ws=${server.ws}`));
            await page.waitForFunction(() => document.getElementById('url').value !== '');
            const name = (await page.inputValue('#url')).split('/')[3];
            await page.click('#publishBtn');
            await waitForText(page, '#status', 'PUBLISHING');
            const recordName = (await rest(server, '/stream/find', { name })).body[0].recordName;
            // Eight seconds from when the browser sends its big simulcast layer (as for the
            // vanishing publisher above): a CI run's Chromium sent its first layer 2 s after
            // PUBLISHING and the big one 5 s after, and the file held 4.3 s. The file may begin
            // before the big layer (the server waits 2 s for announced layers), so the ramp-up
            // is allowed on top of the 8 s.
            const published = Date.now();
            await waitForOutboundWidth(page, 640);
            const ramp = (Date.now() - published) / 1000;
            t.diagnostic(`big layer ${ramp.toFixed(1)} s after PUBLISHING`);
            await sleep(8_000);
            process.kill(serverPid(server.logPath), 'SIGKILL');
            const deadline = Date.now() + 5_000;
            while (!server.exited() && Date.now() < deadline) await sleep(50);
            assert.equal(server.exited()?.signal, 'SIGKILL');

            const records = join(dirname(server.logPath), 'records');
            const p = probe(join(records, recordName));
            t.diagnostic(`after SIGKILL ffprobe ${JSON.stringify(p)}`);
            checkProbe(p, 6, 9 + ramp);
            // Chromium plays what is on disk (the server is dead: a small Range-capable one serves it).
            const file = await serveFileWithRanges(join(records, recordName));
            try {
                const played = await playVideo(page, '#recVideo', file.url);
                t.diagnostic(`after SIGKILL playback ${JSON.stringify(played)}`);
                checkPlayback(played, 6, 9 + ramp);
            } finally {
                await file.close();
            }
        })(t);
    } finally {
        await own.close();
    }
});
