// VOD in Chromium: files made by ffmpeg at test time, and a recording made by the server itself,
// played as vod:// with the Player demo page: frames decoded and audio energy rising. Two
// viewers of one vod-live:// name share one source.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';

import {
    TEST_TIMEOUT_MS, expectFramesDecoded, fixture, openSdkPage, rest, serveSdkPages, waitForOutboundWidth, waitForStatus, waitForText,
} from './harness.mjs';

const PLAYER = '/client/examples/demo/streaming/player/player.html';

let fx;
let files;
let media;
before(async () => {
    fx = await fixture();
    files = await serveSdkPages();
    media = join(dirname(fx.server.logPath), 'media');
    mkdirSync(media, { recursive: true });
    const ff = (out, args) => execFileSync('ffmpeg', ['-y', '-hide_banner', '-loglevel', 'error', ...args, join(media, out)]);
    ff('a.mp4', ['-f', 'lavfi', '-i', 'testsrc=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
        '-t', '20', '-c:v', 'libx264', '-profile:v', 'baseline', '-pix_fmt', 'yuv420p', '-g', '30', '-bf', '0',
        '-c:a', 'aac', '-ar', '48000', '-ac', '2', '-movflags', '+faststart']);
    ff('b.mp4', ['-f', 'lavfi', '-i', 'testsrc=size=1280x720:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=660:sample_rate=44100',
        '-t', '12', '-c:v', 'libx264', '-profile:v', 'main', '-pix_fmt', 'yuv420p', '-g', '30', '-bf', '0',
        '-c:a', 'aac', '-ar', '44100', '-ac', '1']);
});
after(async () => { await files?.close(); await fx?.close(); });

async function playVod(label, name) {
    const page = await (await fx.browser(label)).newPage(label);
    await page.goto(fx.server.webUrl(`${PLAYER}?ws=${fx.server.ws}&streamName=${encodeURIComponent(name)}`));
    await page.click('#playBtn');
    await waitForText(page, '#status', 'PLAYING');
    return page;
}

for (const [file, size] of [['a.mp4', [640, 360]], ['b.mp4', [1280, 720]]]) {
    test(`vod://${file} plays with picture and sound`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
        await fx.run(async () => {
            const page = await playVod(`vod-${file}`, `vod://${file}`);
            const f = await expectFramesDecoded(page, '#remoteVideo video', { audio: true });
            t.diagnostic(`${f.width}x${f.height} ${f.codec}, ${f.decoded} frames, ${f.audioSamples} audio samples`);
            assert.deepEqual([f.width, f.height], size);
        })(t);
    });
}

test('a recording made by the server plays back as vod://', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const pub = await openSdkPage(fx, files, 'recorder', 'ours');
        const name = `rec-${Date.now()}`;
        await pub.evaluate((n) => {
            sdk.create('r', { name: n, record: true, display: document.getElementById('local') });
            sdk.streams.r.publish();
        }, name);
        await waitForStatus(pub, 'r', 'PUBLISHING');
        // The camera's full picture is the browser's big simulcast layer. A busy machine's
        // Chromium has started it 5 s late; the recording then begins on the small layer and
        // moves to the big one when it comes. So: wait for it, then record 5 s of it.
        const published = Date.now();
        await waitForOutboundWidth(pub, 640);
        const bigAfter = Date.now() - published;
        await new Promise((r) => setTimeout(r, 5000));
        await pub.evaluate(() => sdk.stop('r'));
        await waitForStatus(pub, 'r', 'UNPUBLISHED');
        const recordName = await pub.evaluate(() => sdk.streams.r.getRecordInfo());
        assert.ok(recordName && recordName.endsWith('.mp4'), `recordName ${recordName}`);
        copyFileSync(join(dirname(fx.server.logPath), 'records', recordName), join(media, 'rec.mp4'));
        const page = await playVod('vod-rec', 'vod://rec.mp4');
        const f = await expectFramesDecoded(page, '#remoteVideo video', { audio: true });
        // The playback shows the full picture: from the start, or from where the big layer came.
        const sel = '#remoteVideo video';
        await page.waitForFunction((q) => document.querySelector(q).videoWidth === 640, sel, { timeout: 10_000, polling: 100 })
            .catch(() => {});
        const size = await page.$eval(sel, (v) => [v.videoWidth, v.videoHeight]);
        t.diagnostic(`big layer sent ${bigAfter} ms after PUBLISHING; recording ${recordName}: starts ` +
            `${f.width}x${f.height}, then ${size.join('x')}, ${f.decoded} frames in the window`);
        assert.deepEqual(size, [640, 480]);
    })(t);
});

test('two vod-live:// viewers share one source', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async () => {
        const a = await playVod('live-a', 'vod-live://a.mp4');
        await expectFramesDecoded(a, '#remoteVideo video', { audio: true });
        const b = await playVod('live-b', 'vod-live://a.mp4');
        const fb = await expectFramesDecoded(b, '#remoteVideo video', { audio: true });
        assert.deepEqual([fb.width, fb.height], [640, 360]);
        const { status, body } = await rest(fx.server, '/vod/find_all');
        assert.equal(status, 200);
        assert.equal(body.filter((e) => e.uri === 'vod-live://a.mp4').length, 1, JSON.stringify(body));
        // Missing file and a path trick: the exact WCS info.
        for (const bad of ['vod://missing.mp4', 'vod://../../etc/passwd']) {
            const p = await (await fx.browser(`bad-${bad.length}`)).newPage('bad');
            await p.goto(fx.server.webUrl(`${PLAYER}?ws=${fx.server.ws}&streamName=${encodeURIComponent(bad)}`));
            await p.click('#playBtn');
            await waitForText(p, '#status', 'FAILED');
            await waitForText(p, '#info', 'File not found');
        }
    })(t);
});
