// Instant start, measured: how long a viewer waits for its first decoded frame, from the SDK's
// play() to `framesDecoded > 0` in Chromium's getStats (signalling, ICE and DTLS included), for
// sources that cannot make a keyframe on request (an RTMP encoder with a keyframe every 2 s, an
// RTSP camera with one every 4 s, a file played as `vod-live://` with one every 4 s) and for a
// browser publisher (which answers a keyframe request). A viewer gets the GOP the server holds as
// soon as its peer connects, so it does not wait for the next keyframe. How far behind live the
// viewer then plays, from the RTP timestamps of the frames it delivers (lagBehindLive): the held
// GOP must reach it faster than real time for it to catch up. Figures are printed
// (p50 and worst of 6 plays each; the release server: SLUICE_BIN=target/release/sluice), not
// asserted: see BENCHMARKS.md. What is asserted: every play decodes frames. Last, viewers who
// join a browser publisher together (four plays at once, three times).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';

import {
    STATUS_TIMEOUT_MS, TEST_TIMEOUT_MS, fixture, openSdkPage, publishRtmp, serveSdkPages, sleep,
    startCamera, waitForStatus,
} from './harness.mjs';

const PLAYS = 6;

let fx;
let files;
let encoder;
let camera;
before(async () => {
    // The test camera listens on 127.0.0.1, which the default policy refuses: allow that address.
    fx = await fixture({ serverArgs: ['--rtsp-allow', '127.0.0.1'] });
    files = await serveSdkPages();
    camera = await startCamera();
    const media = join(dirname(fx.server.logPath), 'media');
    mkdirSync(media, { recursive: true });
    execFileSync('ffmpeg', ['-y', '-hide_banner', '-loglevel', 'error',
        '-f', 'lavfi', '-i', 'testsrc=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440',
        '-t', '120', '-c:v', 'libx264', '-preset', 'ultrafast', '-profile:v', 'baseline', '-pix_fmt', 'yuv420p', '-g', '120',
        '-c:a', 'aac', '-movflags', '+faststart', join(media, 'gop4.mp4')]);
});
after(async () => {
    encoder?.kill('SIGKILL');
    camera?.child.kill('SIGKILL');
    await files?.close();
    await fx?.close();
});

/**
 * How far behind live the page's newest video receiver plays, sampled every 100 ms for
 * `seconds`: from getSynchronizationSources(), the RTP timestamp of each frame delivered to the
 * track and when it was delivered. A viewer at the live edge delivers frames at their pace, so
 * (RTP time - delivery time) stays constant; while it works through a backlog (the held GOP
 * still queued in the server's pacer, or played at its pace) it is lower by the lag. The lag at
 * each sample is measured against the median of the last second's samples, so it assumes the
 * viewer is at the live edge by then. Returns the lag (ms) at 1, 3 and 5 s after the call and
 * the first second after which it stays under 50 ms.
 */
function lagBehindLive(page, seconds = 8) {
    return page.evaluate(async (secs) => {
        const pcs = (window.__pcs || []).filter((pc) => pc.connectionState !== 'closed');
        const receiver = pcs.at(-1).getReceivers().find((r) => r.track && r.track.kind === 'video');
        const samples = [];
        let unwrap = 0;
        let last = null;
        const t0 = performance.now();
        while (performance.now() - t0 < secs * 1000) {
            const s = receiver.getSynchronizationSources()[0];
            if (s && s.rtpTimestamp !== undefined) {
                if (last !== null && s.rtpTimestamp < last && last - s.rtpTimestamp > 2 ** 31) unwrap += 2 ** 32;
                last = s.rtpTimestamp;
                samples.push({ at: performance.now() - t0, offset: (unwrap + s.rtpTimestamp) / 90 - s.timestamp });
            }
            await new Promise((r) => setTimeout(r, 100));
        }
        const tail = samples.filter((x) => x.at > (secs - 1) * 1000).map((x) => x.offset).sort((a, b) => a - b);
        const live = tail[Math.floor(tail.length / 2)];
        const lagAt = (sec) => {
            const near = samples.find((x) => x.at >= sec * 1000);
            return near ? Math.round(live - near.offset) : null;
        };
        const lastBehind = samples.filter((x) => live - x.offset >= 50).at(-1);
        return { at1: lagAt(1), at3: lagAt(3), at5: lagAt(5), caughtUp: lastBehind ? +(lastBehind.at / 1000).toFixed(1) : 0 };
    }, seconds);
}

/**
 * Play `key`/`name` once and watch its new peer connection from inside the page (5 ms polls):
 * ms from play() to the SDP answer applied, ICE connected, DTLS done (connectionState), the
 * first video packet and the first decoded frame.
 */
function playAndWatch(page, key, name) {
    return page.evaluate(async ([k, n, timeout]) => {
        const t0 = performance.now();
        const index = (window.__pcs || []).length;
        sdk.play(k, n);
        const m = {};
        const at = (what) => { m[what] ??= Math.round(performance.now() - t0); };
        while (performance.now() - t0 < timeout && m.frame === undefined) {
            const pc = (window.__pcs || [])[index];
            if (pc) {
                if (pc.remoteDescription) at('answer');
                if (['connected', 'completed'].includes(pc.iceConnectionState)) at('ice');
                if (pc.connectionState === 'connected') at('dtls');
                (await pc.getStats()).forEach((s) => {
                    if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
                    if (s.packetsReceived > 0) at('packet');
                    if (s.framesDecoded > 0) at('frame');
                });
            }
            await new Promise((r) => setTimeout(r, 5));
        }
        return m;
    }, [key, name, STATUS_TIMEOUT_MS]);
}

/**
 * Play `name` PLAYS times from one page: the phases of each (playAndWatch), and how far behind
 * live the last one plays in its first seconds (lagBehindLive).
 */
async function firstFrameTimes(page, name) {
    const plays = [];
    let behind = null;
    for (let i = 0; i < PLAYS; i++) {
        const key = `p${i}`;
        const m = await playAndWatch(page, key, name);
        assert.ok(m.frame !== undefined, `play ${i} of ${name}: no frame decoded (${JSON.stringify(m)})`);
        plays.push(m);
        if (i === PLAYS - 1) {
            behind = await lagBehindLive(page);
        }
        await page.evaluate((k) => sdk.stop(k), key);
        await waitForStatus(page, key, 'STOPPED');
        // Land the next play at another point of the source's GOP.
        await sleep(700 + i * 310);
    }
    return { plays, behind };
}

/**
 * Viewers who join together (an event's start): `n` plays of `name` started at once from one
 * page, `rounds` times; ms from the burst's start to each play's first decoded frame.
 */
async function burstTimes(page, name, n, rounds) {
    const times = [];
    for (let r = 0; r < rounds; r++) {
        const frames = await page.evaluate(async ([count, nm, timeout]) => {
            const t0 = performance.now();
            const index = (window.__pcs || []).length;
            for (let i = 0; i < count; i++) sdk.play(`b${i}`, nm);
            const at = new Array(count).fill(null);
            while (performance.now() - t0 < timeout && at.includes(null)) {
                for (let i = 0; i < count; i++) {
                    const pc = (window.__pcs || [])[index + i];
                    if (!pc || at[i] !== null) continue;
                    (await pc.getStats()).forEach((s) => {
                        if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0) {
                            at[i] ??= Math.round(performance.now() - t0);
                        }
                    });
                }
                await new Promise((res) => setTimeout(res, 5));
            }
            return at;
        }, [n, name, STATUS_TIMEOUT_MS]);
        assert.ok(!frames.includes(null), `burst ${r} of ${name}: a play decoded no frame (${frames})`);
        times.push(...frames);
        for (let i = 0; i < n; i++) {
            await page.evaluate((k) => sdk.stop(k), `b${i}`);
            await waitForStatus(page, `b${i}`, 'STOPPED');
        }
        await sleep(1500);
    }
    const sorted = [...times].sort((a, b) => a - b);
    return `first frame p50 ${sorted[Math.floor(sorted.length / 2)]} ms, worst ${sorted.at(-1)} ms `
        + `(${rounds} bursts of ${n}: ${times.join(', ')})`;
}

function summary({ plays, behind }) {
    const p50 = (what) => {
        const s = plays.map((m) => m[what]).sort((a, b) => a - b);
        return s[Math.floor(s.length / 2)];
    };
    const worst = Math.max(...plays.map((m) => m.frame));
    return `first frame p50 ${p50('frame')} ms, worst ${worst} ms (${plays.map((m) => m.frame).join(', ')}); `
        + `p50 of answer ${p50('answer')}, ICE ${p50('ice')}, DTLS ${p50('dtls')}, first packet ${p50('packet')} ms; `
        + `behind live (last play) ${behind.at1} / ${behind.at3} / ${behind.at5} ms at 1 / 3 / 5 s, `
        + `under 50 ms from ${behind.caughtUp} s`;
}

test('first frame: RTMP (GOP 2 s), RTSP camera (GOP 4 s), vod-live:// (GOP 4 s), browser publisher', { timeout: TEST_TIMEOUT_MS * 4 }, async (t) => {
    await fx.run(async () => {
        encoder = publishRtmp(`rtmp://127.0.0.1:${fx.server.rtmp}/live/ff-gop2`, { gop: 60 });
        const viewer = await openSdkPage(fx, files, 'viewer', 'ours');
        await sleep(3000); // a full GOP held
        t.diagnostic(`RTMP encoder (GOP 2 s): ${summary(await firstFrameTimes(viewer, 'ff-gop2'))}`);

        // The first play of a camera or a file starts its source (not an instant start): another
        // page keeps one playing meanwhile, and the measured page's plays join it.
        const warm = await openSdkPage(fx, files, 'warm', 'ours');
        const cam = `rtsp://127.0.0.1:${camera.port}/gop4`;
        await warm.evaluate((n) => sdk.play('cam', n), cam);
        await waitForStatus(warm, 'cam', 'PLAYING');
        await sleep(5000);
        t.diagnostic(`RTSP camera (GOP 4 s): ${summary(await firstFrameTimes(viewer, cam))}`);

        await warm.evaluate(() => sdk.play('file', 'vod-live://gop4.mp4'));
        await waitForStatus(warm, 'file', 'PLAYING');
        await sleep(5000);
        t.diagnostic(`vod-live:// (GOP 4 s): ${summary(await firstFrameTimes(viewer, 'vod-live://gop4.mp4'))}`);

        const publisher = await openSdkPage(fx, files, 'publisher', 'ours');
        await publisher.evaluate(() => sdk.publish('cam', 'ff-browser'));
        await waitForStatus(publisher, 'cam', 'PUBLISHING');
        await sleep(1000);
        t.diagnostic(`browser publisher: ${summary(await firstFrameTimes(viewer, 'ff-browser'))}`);
        t.diagnostic(`browser publisher, 4 viewers at once: ${await burstTimes(viewer, 'ff-browser', 4, 3)}`);
    })(t);
});
