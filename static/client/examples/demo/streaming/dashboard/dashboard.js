/**
 * Dashboard: every published stream of the server as a tile (thumbnail, name, source,
 * resolution, bitrate sparkline, viewers, REC badge), server totals at the top, and a player:
 * clicking a tile plays that stream here with the SDK.
 *
 * Data: the REST API (utils.js getRestUrl(); ?rest=PORT overrides the port).
 * - `/stream/find_all` every POLL_MS: published entries are the tiles, the others are viewers
 *   (counted per name); `record: true` on a published entry is a running recording.
 * - `/stream/snapshot {"streamName"}` per tile every SNAPSHOT_MS (with jitter, staggered
 *   between tiles, never two requests in flight for one tile): the thumbnail.
 * The management API answers clients on the server's host only unless the operator set an API
 * key (--api-key): the key typed here is kept in localStorage and sent as
 * `Authorization: Bearer <key>`. A server whose CORS preflight does not allow that header
 * (the request then fails before reaching it) gets the key as `?token=<key>` instead, which the
 * server accepts too.
 */
'use strict';

var SESSION_STATUS = Flashphoner.constants.SESSION_STATUS;
var STREAM_STATUS = Flashphoner.constants.STREAM_STATUS;

/** How often the stream list is read. */
var POLL_MS = 2000;
/** How often each tile's thumbnail is refreshed, and the random spread around it. */
var SNAPSHOT_MS = 3500;
var SNAPSHOT_JITTER_MS = 1000;
/** Thumbnails: JPEG scaled to this width (a server ignoring the parameters sends a PNG). */
var THUMB_WIDTH = 320;
/** Stream objects without a size: one snapshot in this many at full size, to show it. */
var UNSCALED_EVERY = 10;
/** Points kept for a sparkline: one per poll, about a minute. */
var SPARK_POINTS = 30;
/** Where the API key is kept in this browser. */
var API_KEY_STORAGE = 'sluice.dashboard.apiKey';

/**
 * Fields of a stream object that may carry its measured bitrate (kbit/s, as WCS's `bitrate`),
 * in order of preference; `stats` / `metrics` sub-objects are looked at too. The video and
 * audio bitrates are added when both are there. `bitrate` (in WCS the bitrate the client asked
 * for) counts only when above 0.
 */
var VIDEO_BITRATE_FIELDS = ['videoBitrate', 'videoBitrateKbps'];
var AUDIO_BITRATE_FIELDS = ['audioBitrate', 'audioBitrateKbps'];
var TOTAL_BITRATE_FIELDS = ['bitrateKbps', 'currentBitrate'];

var tiles = {};        // stream name -> tile state
var tileCount = 0;     // tiles created so far, to stagger their snapshots
var authMode = 'header'; // 'header' (Authorization) or 'query' (?token=), see header comment
var player = {stream: null, name: null, next: null, connecting: false};
var playerDisplay;

function init_page() {
    playerDisplay = document.getElementById('remoteVideo');
    document.getElementById('restUrl').textContent = getRestUrl();
    var keyInput = document.getElementById('apiKey');
    keyInput.value = storedApiKey();
    document.getElementById('saveKeyBtn').onclick = saveApiKey;
    keyInput.addEventListener('keydown', function (e) {
        if (e.key === 'Enter') {
            saveApiKey();
        }
    });
    document.getElementById('stopBtn').onclick = stopPlaying;
    try {
        Flashphoner.init();
    } catch (e) {
        document.getElementById('notifyFlash').textContent =
            "Your browser doesn't support WebRTC technology needed to play streams here";
    }
    poll();
}

// ---------------------------------------------------------------------------------------------
// REST

function storedApiKey() {
    try {
        return window.localStorage.getItem(API_KEY_STORAGE) || '';
    } catch (e) {
        return '';
    }
}

function saveApiKey() {
    var key = field('apiKey').trim();
    try {
        if (key) {
            window.localStorage.setItem(API_KEY_STORAGE, key);
        } else {
            window.localStorage.removeItem(API_KEY_STORAGE);
        }
    } catch (e) { /* storage off: the key lasts as long as the page */ }
    authMode = 'header';
    poll();
}

/** The key in force: the field (saved or not) wins over the stored one. */
function apiKey() {
    return field('apiKey').trim() || storedApiKey();
}

/** An error of the REST API: `refused` for 401/403, `status` the HTTP status (0: no answer). */
function RestError(message, status, refused) {
    this.message = message;
    this.status = status;
    this.refused = refused;
}

/**
 * Call a REST method: POST with `body` as JSON (GET without one). Resolves with the parsed
 * answer; rejects with a RestError.
 */
function api(path, body) {
    var key = apiKey();
    var send = function (mode) {
        var url = getRestUrl() + path;
        var init = {method: body ? 'POST' : 'GET', headers: {}, cache: 'no-store'};
        if (body) {
            init.headers['Content-Type'] = 'application/json';
            init.body = JSON.stringify(body);
        }
        if (key && mode === 'header') {
            init.headers.Authorization = 'Bearer ' + key;
        } else if (key) {
            url += (url.indexOf('?') >= 0 ? '&' : '?') + 'token=' + encodeURIComponent(key);
        }
        return fetch(url, init);
    };
    return send(authMode).catch(function (e) {
        if (!key || authMode !== 'header') {
            throw e;
        }
        // No answer with the header: a CORS preflight that does not allow Authorization
        // looks like this. Try the query parameter, and keep it if that gets through.
        return send('query').then(function (res) {
            authMode = 'query';
            return res;
        });
    }).catch(function (e) {
        throw new RestError('the REST API at ' + getRestUrl() + ' does not answer (' +
            (e && e.message ? e.message : e) + ')', 0, false);
    }).then(function (res) {
        return res.text().then(function (text) {
            var json = null;
            try {
                json = text ? JSON.parse(text) : null;
            } catch (e) {
                json = null;
            }
            if (res.ok) {
                return json;
            }
            var reason = json && json.error ? json.error : (text || res.statusText);
            throw new RestError(reason, res.status, res.status === 401 || res.status === 403);
        });
    });
}

function showNotice(text) {
    var el = document.getElementById('notice');
    el.textContent = text || '';
    el.hidden = !text;
}

// ---------------------------------------------------------------------------------------------
// The stream list

var pollTimer = null;
var polling = false;

/** Read the stream list now, then every POLL_MS (one request at a time). */
function poll() {
    clearTimeout(pollTimer);
    if (polling) {
        pollTimer = setTimeout(poll, 100); // a request is out: ask again once it is back
        return;
    }
    polling = true;
    api('/stream/find_all').then(function (list) {
        showNotice('');
        render(Array.isArray(list) ? list : []);
    }).catch(function (e) {
        if (e.refused) {
            showNotice('The REST API refused: ' + e.message + (apiKey()
                ? ' (HTTP ' + e.status + ' with the API key set below: check it).'
                : ' (HTTP ' + e.status + '). Set an API key below.'));
        } else {
            showNotice(e.status ? 'The REST API answered HTTP ' + e.status + ': ' + e.message
                : 'Cannot read the streams: ' + e.message + '.');
        }
    }).then(function () {
        polling = false;
        pollTimer = setTimeout(poll, POLL_MS);
    });
}

/** Tiles, totals and viewer counts from a `find_all` answer. */
function render(list) {
    var published = list.filter(function (s) { return s.published; });
    var viewersByName = {};
    list.forEach(function (s) {
        if (!s.published) {
            viewersByName[s.name] = (viewersByName[s.name] || 0) + 1;
        }
    });
    document.getElementById('totalStreams').textContent = published.length;
    document.getElementById('totalViewers').textContent = list.length - published.length;
    document.getElementById('totalRecordings').textContent =
        published.filter(function (s) { return s.record; }).length;

    var seen = {};
    published.forEach(function (s) {
        seen[s.name] = true;
        var tile = tiles[s.name] || addTile(s.name);
        updateTile(tile, s, typeof s.viewers === 'number' ? s.viewers : (viewersByName[s.name] || 0));
    });
    Object.keys(tiles).forEach(function (name) {
        if (!seen[name]) {
            removeTile(tiles[name]);
        }
    });
    document.getElementById('empty').hidden = published.length > 0;
}

// ---------------------------------------------------------------------------------------------
// Tiles

function el(tag, className, text) {
    var e = document.createElement(tag);
    if (className) {
        e.className = className;
    }
    if (text !== undefined) {
        e.textContent = text;
    }
    return e;
}

function addTile(name) {
    var t = {name: name, history: [], inFlight: false, removed: false, timer: null, snapshots: 0,
        sized: false, snapshotSize: ''};
    t.el = el('div', 'tile');
    t.el.dataset.name = name;
    t.el.setAttribute('role', 'button');
    t.el.tabIndex = 0;
    t.el.title = 'Play ' + name;
    var box = el('div', 'thumb-box');
    t.img = el('img', 'thumb');
    t.img.alt = name;
    t.noPicture = el('div', 'no-picture', 'waiting for a picture…');
    t.rec = el('span', 'rec', 'REC');
    t.rec.hidden = true;
    box.appendChild(t.img);
    box.appendChild(t.noPicture);
    box.appendChild(t.rec);
    var body = el('div', 'body');
    t.nameEl = el('div', 'name', name);
    var meta = el('div', 'meta');
    t.source = el('span', 'source');
    t.resolution = el('span', 'resolution');
    meta.appendChild(t.source);
    meta.appendChild(t.resolution);
    var rate = el('div', 'rate');
    t.spark = el('canvas', 'spark');
    t.spark.width = 200;
    t.spark.height = 48;
    t.bitrate = el('span', 'bitrate', 'bitrate –');
    t.bitrate.title = 'bitrate';
    var viewers = el('span', 'viewers-box');
    t.viewers = el('span', 'viewers', '0');
    viewers.appendChild(t.viewers);
    t.viewersWord = document.createTextNode(' viewers');
    viewers.appendChild(t.viewersWord);
    rate.appendChild(t.spark);
    rate.appendChild(t.bitrate);
    rate.appendChild(viewers);
    body.appendChild(t.nameEl);
    body.appendChild(meta);
    body.appendChild(rate);
    t.el.appendChild(box);
    t.el.appendChild(body);
    t.el.onclick = function () { play(name); };
    t.el.onkeydown = function (e) {
        if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            play(name);
        }
    };
    t.el.classList.toggle('playing', player.name === name);
    document.getElementById('tiles').appendChild(t.el);
    tiles[name] = t;
    // The first picture soon, tiles a little apart; then every SNAPSHOT_MS or so.
    scheduleSnapshot(t, 200 + (tileCount++ % 8) * 450);
    return t;
}

function removeTile(t) {
    t.removed = true;
    clearTimeout(t.timer);
    if (t.el.parentNode) {
        t.el.parentNode.removeChild(t.el);
    }
    delete tiles[t.name];
}

function updateTile(t, s, viewers) {
    t.source.textContent = s.mediaProvider || '';
    // Stream objects of WebRTC publishers may carry no size (the client sends none): then
    // the size of the last unscaled snapshot, else a dash.
    t.sized = !!(s.width && s.height);
    t.resolution.textContent = t.sized ? s.width + 'x' + s.height : (t.snapshotSize || '–');
    t.rec.hidden = !s.record;
    t.rec.title = s.recordName ? 'Recording to ' + s.recordName : 'Recording';
    t.viewers.textContent = viewers;
    t.viewersWord.textContent = viewers === 1 ? ' viewer' : ' viewers';
    var rate = bitrateOf(s);
    if (rate !== null || t.history.length) {
        t.history.push(rate === null ? 0 : rate);
        if (t.history.length > SPARK_POINTS) {
            t.history.shift();
        }
    }
    t.bitrate.textContent = rate === null ? 'bitrate –' : formatKbps(rate);
    drawSparkline(t.spark, t.history);
}

/** A finite number >= 0 from a field, else null. */
function num(v) {
    var n = typeof v === 'string' && v !== '' ? Number(v) : v;
    return typeof n === 'number' && isFinite(n) && n >= 0 ? n : null;
}

function firstOf(o, names) {
    for (var i = 0; o && i < names.length; i++) {
        var v = num(o[names[i]]);
        if (v !== null) {
            return v;
        }
    }
    return null;
}

/** The stream's measured bitrate in kbit/s, or null when its object carries none. */
function bitrateOf(s) {
    // sluice's measured rates: `metrics.videoRate` and `metrics.audioRate`, in bit/s.
    var m = s.metrics;
    if (m && typeof m === 'object' && num(m.videoRate) !== null) {
        return (num(m.videoRate) + (num(m.audioRate) || 0)) / 1000;
    }
    var places = [s, s.stats, s.metrics];
    for (var i = 0; i < places.length; i++) {
        var o = places[i];
        if (!o || typeof o !== 'object') {
            continue;
        }
        var video = firstOf(o, VIDEO_BITRATE_FIELDS);
        var audio = firstOf(o, AUDIO_BITRATE_FIELDS);
        if (video !== null || audio !== null) {
            return (video || 0) + (audio || 0);
        }
        var total = firstOf(o, TOTAL_BITRATE_FIELDS);
        if (total !== null) {
            return total;
        }
        var requested = num(o.bitrate);
        if (requested) {
            return requested;
        }
    }
    return null;
}

function formatKbps(kbps) {
    return kbps >= 1000 ? (kbps / 1000).toFixed(kbps >= 10000 ? 0 : 1) + ' Mbps' : Math.round(kbps) + ' kbps';
}

function drawSparkline(canvas, values) {
    var ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    canvas.hidden = values.length === 0;
    if (values.length < 2) {
        return;
    }
    var max = Math.max.apply(null, values) || 1;
    var pad = 3;
    var w = canvas.width - 2 * pad;
    var h = canvas.height - 2 * pad;
    var step = w / (SPARK_POINTS - 1);
    var x0 = pad + w - step * (values.length - 1);
    ctx.beginPath();
    values.forEach(function (v, i) {
        var x = x0 + i * step;
        var y = pad + h - (v / max) * h;
        if (i === 0) {
            ctx.moveTo(x, y);
        } else {
            ctx.lineTo(x, y);
        }
    });
    ctx.strokeStyle = '#1a5fb4';
    ctx.lineWidth = 3;
    ctx.stroke();
}

// ---------------------------------------------------------------------------------------------
// Thumbnails

function scheduleSnapshot(t, delay) {
    clearTimeout(t.timer);
    t.timer = setTimeout(function () { refreshThumbnail(t); }, delay);
}

function nextSnapshotDelay() {
    return SNAPSHOT_MS + (Math.random() - 0.5) * SNAPSHOT_JITTER_MS;
}

/** One snapshot request for the tile (never two at once), then the next one scheduled. */
function refreshThumbnail(t) {
    if (t.removed || t.inFlight) {
        return;
    }
    if (document.hidden) {
        scheduleSnapshot(t, nextSnapshotDelay()); // nobody looks: ask the server for nothing
        return;
    }
    t.inFlight = true;
    // Without a size in the stream object, every UNSCALED_EVERY-th snapshot (the first one
    // included) comes at the stream's own size, which the tile then shows.
    var unscaled = !t.sized && (t.snapshots++ % UNSCALED_EVERY === 0);
    var query = '?format=jpeg' + (unscaled ? '' : '&width=' + THUMB_WIDTH);
    api('/stream/snapshot' + query, {streamName: t.name}).then(function (answer) {
        if (t.removed || !answer || !answer.data) {
            return;
        }
        t.img.onload = unscaled ? function () {
            t.snapshotSize = t.img.naturalWidth + 'x' + t.img.naturalHeight;
            if (!t.sized) {
                t.resolution.textContent = t.snapshotSize;
            }
        } : null;
        t.img.src = 'data:' + imageType(answer.data) + ';base64,' + answer.data;
        t.noPicture.hidden = true;
    }).catch(function (e) {
        if (!t.removed && !t.img.getAttribute('src')) {
            // e.g. "Stream has no video", "No decodable video frame within 3 s"
            t.noPicture.textContent = e.refused ? 'snapshot refused' : (e.status ? e.message : 'no picture yet');
        }
    }).then(function () {
        t.inFlight = false;
        if (!t.removed) {
            scheduleSnapshot(t, nextSnapshotDelay());
        }
    });
}

/** The MIME type of base64 image data, from its first bytes. */
function imageType(base64) {
    if (base64.indexOf('/9j/') === 0) {
        return 'image/jpeg';
    }
    return 'image/png';
}

// ---------------------------------------------------------------------------------------------
// The player

/** Play `name` in the page; a stream already playing is stopped first. */
function play(name) {
    if (player.stream) {
        if (player.name === name) {
            return;
        }
        player.next = name;
        stopPlaying();
        return;
    }
    player.name = name;
    player.next = null;
    markPlaying();
    document.getElementById('playingName').textContent = name;
    showStatus('info', '');
    if (player.connecting) {
        return; // the session being opened plays player.name
    }
    var sessions = Flashphoner.getSessions();
    var session = sessions.find(function (s) { return s.status() === SESSION_STATUS.ESTABLISHED; });
    if (session) {
        startStream(session, name);
        return;
    }
    sessions.forEach(function (s) {
        s.on(SESSION_STATUS.DISCONNECTED, function () {});
        s.on(SESSION_STATUS.FAILED, function () {});
        s.disconnect();
    });
    showStatus('status', 'CONNECTING', 'muted');
    document.getElementById('stopBtn').disabled = true;
    player.connecting = true;
    Flashphoner.createSession({urlServer: setURL()}).on(SESSION_STATUS.ESTABLISHED, function (s) {
        player.connecting = false;
        if (player.name) {
            startStream(s, player.name);
        }
    }).on(SESSION_STATUS.DISCONNECTED, function () {
        onSessionEnded(SESSION_STATUS.DISCONNECTED);
    }).on(SESSION_STATUS.FAILED, function () {
        onSessionEnded(SESSION_STATUS.FAILED);
    });
}

function startStream(session, name) {
    var stopBtn = document.getElementById('stopBtn');
    player.stream = session.createStream({name: name, display: playerDisplay});
    player.stream.on(STREAM_STATUS.PENDING, function (stream) {
        showStatus('status', stream.status(), 'muted');
        stopBtn.disabled = false;
    }).on(STREAM_STATUS.PLAYING, function (stream) {
        showStatus('status', stream.status(), 'ok');
        showStatus('info', '');
        stopBtn.disabled = false;
    }).on(STREAM_STATUS.STOPPED, function (stream) {
        onStreamEnded(stream, 'muted');
    }).on(STREAM_STATUS.FAILED, function (stream) {
        onStreamEnded(stream, 'error');
    });
    player.stream.play();
}

function stopPlaying() {
    if (player.stream) {
        document.getElementById('stopBtn').disabled = true;
        player.stream.stop();
    }
}

function onStreamEnded(stream, kind) {
    if (stream !== player.stream) {
        return;
    }
    showStatus('status', stream.status(), kind);
    showStatus('info', failureText(stream), 'muted');
    player.stream = null;
    player.name = null;
    markPlaying();
    document.getElementById('stopBtn').disabled = true;
    var next = player.next;
    if (next) {
        play(next);
    }
}

function onSessionEnded(status) {
    player.connecting = false;
    showStatus('status', status, status === SESSION_STATUS.FAILED ? 'error' : 'muted');
    player.stream = null;
    player.name = null;
    player.next = null;
    markPlaying();
    document.getElementById('stopBtn').disabled = true;
}

/** Outline the tile being played. */
function markPlaying() {
    Object.keys(tiles).forEach(function (n) {
        tiles[n].el.classList.toggle('playing', n === player.name);
    });
}
