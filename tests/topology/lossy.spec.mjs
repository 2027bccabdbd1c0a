// Scenario lossy (issue 15): a browser publisher, the server and a browser viewer with `tc
// netem` on both legs (the client's veth end impairs what the browsers send, the server's end
// what the server sends), as a lossy Wi-Fi or mobile network would. Where the kernel has no
// netem (gVisor), loss is made by nftables random drops of UDP on each side's input instead,
// and the delay and reordering condition is reported as skipped. The Streamer page publishes
// from the index page and the Player page plays it, both over the clean link; then each network
// condition is applied for a window and the viewer's and publisher's getStats are read:
// frames decoded, freezes (freezeCount, totalFreezesDuration, and the longest gap between two
// presented frames from requestVideoFrameCallback), packets lost, NACKs and retransmissions on
// both legs, keyframe requests. One line of figures per condition (BENCHMARKS.md, "Lossy
// networks"). Asserted: the viewer keeps decoding in every condition, and under loss NACKs are
// answered with retransmissions on both legs (the publisher retransmits what the server asked
// for; the viewer receives retransmissions of what it asked for).
//
// Environment: TOPO_NETNS "<server ns> <client ns>" (run.sh), LOSSY_WINDOW_MS (default 20000).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';

import { sleep } from '../browser/harness.mjs';
import { PORTS, TEST_TIMEOUT_MS, env, playOnPlayerPage, publishFromIndex, topoFixture, waitForText } from './lib.mjs';

const { url, host } = env();
const [SRV_NS, CLI_NS] = (process.env.TOPO_NETNS || '').split(' ');
const WINDOW_MS = Number(process.env.LOSSY_WINDOW_MS || 20_000);

/** The conditions, each applied to both legs. */
const CONDITIONS = [
    { label: 'clean', loss: 0 },
    { label: '5 % loss', loss: 5 },
    { label: '15 % loss', loss: 15 },
    { label: '100 ms delay, 5 % loss, 10 % reordered', loss: 5, delay: 100, reorder: 10 },
];

function ipNetns(ns, args, input) {
    return execFileSync('ip', ['netns', 'exec', ns, ...args], { stdio: 'pipe', input });
}

/** Whether this kernel has netem (gVisor, for one, has not: "Specified qdisc kind is unknown"). */
function hasNetem() {
    try {
        ipNetns(SRV_NS, ['tc', 'qdisc', 'replace', 'dev', 'vs', 'root', 'netem', 'loss', '0%']);
        ipNetns(SRV_NS, ['tc', 'qdisc', 'del', 'dev', 'vs', 'root']);
        return true;
    } catch {
        return false;
    }
}

/**
 * Apply a condition on both legs: with netem on each veth end's egress; without netem, loss
 * only, as random drops of UDP on each namespace's input (nftables `numgen random`: the packet
 * is lost on the wire, the sender sees no error). Returns false when the condition needs netem
 * and there is none.
 */
function impair(c, netem) {
    for (const [ns, dev] of [[SRV_NS, 'vs'], [CLI_NS, 'vc']]) {
        if (netem) {
            const args = [];
            if (c.delay) args.push('delay', `${c.delay}ms`);
            if (c.reorder) args.push('reorder', `${100 - c.reorder}%`, '50%');
            if (c.loss) args.push('loss', `${c.loss}%`);
            try { ipNetns(ns, ['tc', 'qdisc', 'del', 'dev', dev, 'root']); } catch { /* none yet */ }
            if (args.length) ipNetns(ns, ['tc', 'qdisc', 'add', 'dev', dev, 'root', 'netem', ...args]);
        } else {
            if (c.delay || c.reorder) return false;
            try { ipNetns(ns, ['nft', 'delete', 'table', 'inet', 'lossy']); } catch { /* none yet */ }
            if (c.loss) {
                ipNetns(ns, ['nft', '-f', '-'], 'table inet lossy {\n chain in {\n' +
                    '  type filter hook input priority 0; policy accept;\n' +
                    `  meta l4proto udp numgen random mod 100 < ${c.loss} counter drop\n }\n}\n`);
            }
        }
    }
    return true;
}

/** Video RTP stats of the page's open peer connections, summed by direction. */
function videoStats(page) {
    return page.evaluate(async () => {
        const sum = {};
        const add = (k, v) => { sum[k] = (sum[k] || 0) + (v || 0); };
        for (const pc of window.__pcs || []) {
            if (pc.connectionState === 'closed') continue;
            (await pc.getStats()).forEach((s) => {
                if (s.kind !== 'video') return;
                if (s.type === 'inbound-rtp') {
                    for (const k of ['framesDecoded', 'freezeCount', 'totalFreezesDuration', 'packetsLost',
                        'packetsReceived', 'nackCount', 'pliCount', 'firCount', 'retransmittedPacketsReceived',
                        'keyFramesDecoded']) add(`in.${k}`, s[k]);
                } else if (s.type === 'outbound-rtp') {
                    for (const k of ['framesEncoded', 'packetsSent', 'nackCount', 'pliCount', 'firCount',
                        'retransmittedPacketsSent']) add(`out.${k}`, s[k]);
                }
            });
        }
        return sum;
    });
}

/** Start (or reset) the longest-gap meter on the viewer's video element. */
function resetGapMeter(page) {
    return page.evaluate(() => {
        const v = document.querySelector('#remoteVideo video');
        if (!window.__gap) {
            window.__gap = { last: 0, max: 0, frames: 0 };
            const cb = (now) => {
                const g = window.__gap;
                if (g.last) g.max = Math.max(g.max, now - g.last);
                g.last = now;
                g.frames += 1;
                v.requestVideoFrameCallback(cb);
            };
            v.requestVideoFrameCallback(cb);
        }
        window.__gap.max = 0;
        window.__gap.frames = 0;
    });
}

/**
 * The server's count of viewers on the full NACK history (/metrics on the REST port, with the
 * API key run.sh gave the server): a viewer keeps 500 ms of sent video until it asks for a
 * resend, the full history from the next keyframe sent to it.
 */
async function fullNackHistory(browser) {
    const metricsUrl = `https://${host}:${PORTS.restHttps}/metrics`;
    const res = await browser.context.request.get(metricsUrl, { headers: { Authorization: `Bearer ${process.env.TOPO_API_KEY}` } });
    const text = await res.text();
    assert.equal(res.status(), 200, `GET ${metricsUrl}: ${text.slice(0, 200)}`);
    const m = text.match(/^sluice_viewers_full_nack_history (\d+)$/m);
    assert.ok(m, `no sluice_viewers_full_nack_history on ${metricsUrl}`);
    return Number(m[1]);
}

const delta = (a, b) => Object.fromEntries(Object.keys(b).map((k) => [k, +(b[k] - (a[k] || 0)).toFixed(3)]));

let fx;
let netem = false;
before(async () => {
    assert.ok(SRV_NS && CLI_NS, 'TOPO_NETNS not set: run tests/topology/run.sh lossy');
    netem = hasNetem();
    fx = await topoFixture();
});
after(async () => {
    impair({ loss: 0 }, netem);
    await fx?.close();
});

test('a browser viewer keeps playing under loss, delay and reordering; NACK/RTX on both legs', { timeout: TEST_TIMEOUT_MS + CONDITIONS.length * (WINDOW_MS + 5_000) }, async (t) => {
    await fx.run(async (t, b) => {
        t.diagnostic(netem ? 'impairment: tc netem on both veth ends'
            : 'impairment: no netem in this kernel; loss as nftables random drops on input, delay and reordering skipped');
        const { page: streamer, name } = await publishFromIndex(t, b.pub, url, host);
        const { page: player } = await playOnPlayerPage(t, b.view, new URL(url).origin, host, name);
        const results = [];
        for (const c of CONDITIONS) {
            const { label } = c;
            if (!impair(c, netem)) {
                t.diagnostic(`LOSSY {"condition":"${label}","skipped":"needs tc netem"}`);
                continue;
            }
            await sleep(2_000);
            const [v0, p0] = [await videoStats(player), await videoStats(streamer)];
            await resetGapMeter(player);
            await sleep(WINDOW_MS);
            const [v1, p1] = [await videoStats(player), await videoStats(streamer)];
            const gap = await player.evaluate(() => window.__gap);
            const v = delta(v0, v1);
            const p = delta(p0, p1);
            const secs = WINDOW_MS / 1000;
            const r = {
                condition: label,
                fps: +(v['in.framesDecoded'] / secs).toFixed(1),
                freezes: v['in.freezeCount'],
                freezeSecs: v['in.totalFreezesDuration'],
                longestGapMs: Math.round(gap.max),
                viewerLost: v['in.packetsLost'],
                viewerNacks: v['in.nackCount'],
                viewerRtx: v['in.retransmittedPacketsReceived'],
                viewerPli: v['in.pliCount'] + v['in.firCount'],
                publisherNacksFromServer: p['out.nackCount'],
                publisherRtx: p['out.retransmittedPacketsSent'],
                publisherPli: p['out.pliCount'] + p['out.firCount'],
                publisherFps: +(p['out.framesEncoded'] / secs).toFixed(1),
                viewersOnFullNackHistory: await fullNackHistory(b.view),
            };
            results.push(r);
            t.diagnostic(`LOSSY ${JSON.stringify(r)}`);
            assert.ok(r.fps >= 5, `${label}: the viewer decodes ${r.fps} fps`);
            if (c.loss) {
                assert.ok(r.publisherNacksFromServer > 0 && r.publisherRtx > 0,
                    `${label}: the server asked the publisher for no retransmission, or got none: ${JSON.stringify(r)}`);
                assert.ok(r.viewerNacks > 0 && r.viewerRtx > 0,
                    `${label}: the viewer's NACKs were not answered with retransmissions: ${JSON.stringify(r)}`);
            }
        }
        // The viewer has asked for resends (asserted above), and keyframes came (the server asks
        // the publisher for them): its history is the full one by the end of the lossy windows.
        // (The streamer page's preview is a second viewer on the same lossy leg: the count is
        // 2 when it has switched too.)
        const lossy = results.filter((r) => r.condition !== 'clean');
        if (lossy.length > 0) {
            assert.ok(lossy[lossy.length - 1].viewersOnFullNackHistory >= 1,
                `no viewer switched to the full NACK history: ${JSON.stringify(lossy)}`);
        }
        impair({ loss: 0 }, netem);
        await streamer.click('#publishBtn');
        await waitForText(streamer, '#status', 'UNPUBLISHED');
        await waitForText(player, '#status', 'STOPPED');
    })(t);
});
