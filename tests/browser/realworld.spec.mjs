// Real-world media in Chromium (issue 22): an ordinary 720p MP4 as x264 and phones make it (High
// profile, 3 B-frames, AAC) played with the Player demo page as vod://, as vod-live:// by two
// viewers, and published as is over RTMP by ffmpeg (`-c copy`, as OBS's defaults send B-frames).
// WebRTC receivers do not reorder frames: without re-encoding such video decodes at a picture
// every second or two. Each must decode at least 25 frames per second (over 4 s, in one of up to
// three tries), and the stream object says the video is re-encoded. Each test ends its viewers
// and sources even when it fails, so that one failure does not starve the next of CPU.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';

import {
    TEST_TIMEOUT_MS, expectFramesDecoded, fixture, inboundMedia, rest, sleep, waitForText,
} from './harness.mjs';

const PLAYER = '/client/examples/demo/streaming/player/player.html';
/** The floor the issue sets: frames decoded per second, measured over MEASURE_MS. */
const MIN_FPS = 25;
const MEASURE_MS = 4_000;
const NOTE = 'B-frames: re-encoded to constrained baseline';

let fx;
let media;
before(async () => {
    fx = await fixture();
    media = join(dirname(fx.server.logPath), 'media');
    mkdirSync(media, { recursive: true });
    execFileSync('ffmpeg', ['-y', '-hide_banner', '-loglevel', 'error',
        '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
        '-t', '40', '-c:v', 'libx264', '-profile:v', 'high', '-bf', '3', '-pix_fmt', 'yuv420p',
        '-c:a', 'aac', '-ac', '2', '-movflags', '+faststart', join(media, 'phone.mp4')]);
});
after(async () => { await fx?.close(); });

/** A viewer in a browser of its own (closed when the test ends: `fx.run`). */
async function play(label, name) {
    const browser = await fx.browser(label);
    const page = await browser.newPage(label);
    await page.goto(fx.server.webUrl(`${PLAYER}?ws=${fx.server.ws}&streamName=${encodeURIComponent(name)}`));
    await page.click('#playBtn');
    await waitForText(page, '#status', 'PLAYING');
    return page;
}

/** sluice_viewer_video_shed_total from /metrics: viewers whose link fell behind. Printed, not
 * asserted: on a loaded 2-core machine (Chromium decoding 720p, the server re-encoding it) a
 * loopback viewer's queue can fall behind for lack of CPU, which is what shedding is for. */
async function videoShed() {
    const res = await fetch(`http://127.0.0.1:${fx.server.rest}/metrics`);
    assert.equal(res.status, 200);
    const m = /^sluice_viewer_video_shed_total (\d+)$/m.exec(await res.text());
    assert.ok(m, 'sluice_viewer_video_shed_total in /metrics');
    return Number(m[1]);
}

/**
 * The best bandwidth estimate the server reports for a viewer of `name` in its first seconds:
 * from its play entry in /stream/find, over ESTIMATE_WINDOW_MS from the first video statistics
 * (~1 s after it connects). A loopback viewer of a 2.7 Mbit/s stream must be well above str0m's
 * 1 Mbit/s start by then: the server gives its estimator a goal as soon as video has come
 * (session 9: without it the estimate read 1.0-1.2 Mbit/s for seconds while the stream queued
 * behind the pacer; with it 5.3-5.6 Mbit/s). The bound sits between the two. The first reading
 * alone was asserted until session 16: on a loaded 2-core machine a probe's result can come a
 * second late (CI read 1.01 Mbit/s first; with one core taken by a busy loop, 0.6-2.3 Mbit/s,
 * BENCHMARKS.md sessions 11 and 16). Without the goal the estimate crawled (BENCHMARKS.md, "A
 * fast viewer at the start of a 720p stream": 1.0-1.2 Mbit/s for 4 s for the vod:// viewer, 1.0
 * to 2.0 over 3 s for the vod-live:// one), so the window stays short.
 */
async function earlyEstimate(name) {
    const end = Date.now() + 10_000;
    let best = 0;
    let windowEnd = Infinity;
    while (Date.now() < Math.min(end, windowEnd)) {
        const { status, body } = await rest(fx.server, '/stream/find', { name });
        const e = status === 200 && body.filter((s) => !s.published).map((s) => s.metrics?.bandwidthEstimate).find((x) => x > 0);
        if (e) {
            if (best === 0) windowEnd = Date.now() + ESTIMATE_WINDOW_MS;
            best = Math.max(best, e);
        }
        await sleep(100);
    }
    return best;
}
const EARLY_ESTIMATE_MIN = 2_000_000;
const ESTIMATE_WINDOW_MS = 1_500;

/**
 * Frames decoded per second, after the picture is up: the best of up to MEASURE_TRIES windows
 * of MEASURE_MS, all of them returned (the best first). What this guards against is steady: a
 * B-frame stream passed through decodes at a picture every second or two, one re-encoded at
 * half its rate (the transcoder thinning when it falls behind) at 15, so every window fails.
 * One window alone also failed on a noisy 2-core VM for a few seconds' stall of Chromium or of
 * the transcoding thread beside it (21 fps in CI, session 15), which says nothing of the server.
 */
async function fps(page) {
    const rates = [];
    for (let i = 0; i < MEASURE_TRIES; i++) {
        const before = await inboundMedia(page);
        await sleep(MEASURE_MS);
        const after = await inboundMedia(page);
        rates.push((after.framesDecoded - before.framesDecoded) * 1000 / MEASURE_MS);
        if (rates.at(-1) >= MIN_FPS) break;
    }
    return [Math.max(...rates), rates];
}
const MEASURE_TRIES = 3;

// The published stream's object: its viewers' play entries share its name.
async function streamObject(name) {
    const { status, body } = await rest(fx.server, '/stream/find', { name, published: true });
    assert.equal(status, 200, JSON.stringify(body));
    return body[0];
}

test('a 720p High-profile MP4 with B-frames plays smoothly as vod://', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async (t) => {
        const shed = await videoShed();
        const page = await play('vod', 'vod://phone.mp4');
        const estimate = await earlyEstimate('vod://phone.mp4');
        t.diagnostic(`vod:// viewer's early estimate: ${estimate} bit/s`);
        assert.ok(estimate >= EARLY_ESTIMATE_MIN, `the viewer's best estimate in its first seconds was ${estimate} bit/s`);
        const f = await expectFramesDecoded(page, '#remoteVideo video', { audio: true });
        assert.deepEqual([f.width, f.height], [1280, 720]);
        const [rate, rates] = await fps(page);
        t.diagnostic(`vod:// ${f.width}x${f.height} ${f.codec}: ${rates.map((r) => r.toFixed(1)).join(', ')} frames decoded per second`);
        assert.ok(rate >= MIN_FPS, `${rate} frames per second decoded, want >= ${MIN_FPS}`);
        t.diagnostic(`viewers shed: ${await videoShed() - shed}`);
    })(t);
});

test('two vod-live:// viewers of it both play smoothly', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async (t, defer) => {
        const shed = await videoShed();
        // A shared source runs on for a minute without viewers: end it with the test.
        defer(async () => {
            assert.equal((await rest(fx.server, '/vod/terminate', { uri: 'vod-live://phone.mp4' })).status, 200);
        });
        const a = await play('live-a', 'vod-live://phone.mp4');
        const estimate = await earlyEstimate('vod-live://phone.mp4');
        t.diagnostic(`vod-live:// first viewer's early estimate: ${estimate} bit/s`);
        assert.ok(estimate >= EARLY_ESTIMATE_MIN, `the viewer's best estimate in its first seconds was ${estimate} bit/s`);
        const b = await play('live-b', 'vod-live://phone.mp4');
        await expectFramesDecoded(a, '#remoteVideo video', { audio: true });
        await expectFramesDecoded(b, '#remoteVideo video', { audio: true });
        const [[ra, ratesA], [rb, ratesB]] = await Promise.all([fps(a), fps(b)]);
        t.diagnostic(`vod-live:// ${ratesA.map((r) => r.toFixed(1)).join(', ')} and ${ratesB.map((r) => r.toFixed(1)).join(', ')} frames decoded per second`);
        assert.ok(ra >= MIN_FPS && rb >= MIN_FPS, `${ra}, ${rb} frames per second, want >= ${MIN_FPS}`);
        t.diagnostic(`viewers shed: ${await videoShed() - shed}`);
        assert.equal((await streamObject('vod-live://phone.mp4')).transcoding, NOTE);
    })(t);
});

test('the same file published over RTMP as is (-c copy) plays smoothly', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    await fx.run(async (t, defer) => {
        const { server } = fx;
        const encoder = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re', '-i', join(media, 'phone.mp4'),
            '-c', 'copy', '-f', 'flv', `rtmp://127.0.0.1:${server.rtmp}/live/obs`], { stdio: 'ignore' });
        defer(() => encoder.kill('SIGKILL'));
        const end = Date.now() + 10_000;
        while (Date.now() < end && (await rest(server, '/stream/find', { name: 'obs', published: true })).status !== 200) {
            await sleep(100);
        }
        const page = await play('rtmp', 'obs');
        const f = await expectFramesDecoded(page, '#remoteVideo video', { audio: true });
        assert.deepEqual([f.width, f.height], [1280, 720]);
        const [rate, rates] = await fps(page);
        t.diagnostic(`RTMP ${f.width}x${f.height}: ${rates.map((r) => r.toFixed(1)).join(', ')} frames decoded per second`);
        assert.ok(rate >= MIN_FPS, `${rate} frames per second decoded, want >= ${MIN_FPS}`);
        assert.equal((await streamObject('obs')).transcoding, NOTE);
    })(t);
});
