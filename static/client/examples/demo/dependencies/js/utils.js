/**
 * Helpers shared by the demo pages (the same names as the WCS demo utils.js).
 *
 * Ports: the pages assume the WCS defaults (WebSocket 8080, secure WebSocket 8443, REST 8081).
 * A page or a script loaded before this one may override them with a global `SERVER_PORTS`
 * object ({ws: 18080, wss: 18443, http: 18081}), and any page URL may override them with query
 * parameters `?ws=PORT`, `?wss=PORT`, `?rest=PORT` (the browser tests use this with random ports).
 */
'use strict';

var DEFAULT_PORTS = {
    http: 8081,
    https: 8444,
    legacy: {http: 9091, https: 8888},
    ws: 8080,
    wss: 8443,
    hls: {http: 8082, https: 8445}
};

/** A query parameter of the page URL, or null. */
function getUrlParam(name) {
    return new URLSearchParams(window.location.search).get(name);
}

/** The ports in force: defaults, then SERVER_PORTS, then ?ws= / ?wss= / ?rest= parameters. */
function getPortsConfig() {
    var ports = JSON.parse(JSON.stringify(DEFAULT_PORTS));
    if (typeof SERVER_PORTS === 'object' && SERVER_PORTS) {
        Object.keys(SERVER_PORTS).forEach(function (k) {
            if (SERVER_PORTS[k] !== undefined) {
                ports[k] = SERVER_PORTS[k];
            }
        });
    }
    [['ws', 'ws'], ['wss', 'wss'], ['rest', 'http']].forEach(function (p) {
        var v = getUrlParam(p[0]);
        if (v && /^\d+$/.test(v)) {
            ports[p[1]] = +v;
        }
    });
    return ports;
}

function isSecure() {
    return window.location.protocol === 'https:';
}

/** The WebSocket server URL for this page: ws://<page host>:8080 (or the overridden port). */
function setURL() {
    var ports = getPortsConfig();
    var host = window.location.hostname || '127.0.0.1';
    if (host.indexOf(':') >= 0) {
        host = '[' + host + ']'; // IPv6 literal
    }
    return (isSecure() ? 'wss://' : 'ws://') + host + ':' + (isSecure() ? ports.wss : ports.ws);
}

/** The REST API base: http://<page host>:8081/rest-api (or the overridden port). */
function getRestUrl() {
    var ports = getPortsConfig();
    return (isSecure() ? 'https://' : 'http://') + window.location.hostname + ':' +
        (isSecure() ? ports.https : ports.http) + '/rest-api';
}

/** A random name of `length` characters (letters and digits), e.g. for a stream. */
function createUUID(length) {
    var chars = 'abcdefghijklmnopqrstuvwxyz0123456789';
    var bytes = new Uint8Array(length);
    window.crypto.getRandomValues(bytes);
    var s = '';
    for (var i = 0; i < length; i++) {
        s += chars[bytes[i] % chars.length];
    }
    return s;
}

/** The value of the input with this id. */
function field(id) {
    return document.getElementById(id).value;
}

/** Set a status line: text, and a class for its colour (ok, muted, error). */
function showStatus(elementId, text, kind) {
    var el = document.getElementById(elementId);
    el.textContent = text === undefined || text === null ? '' : text;
    el.className = kind || '';
}

/**
 * Put a notice in the page's #notifyFlash (or at the top of the body) when the camera cannot
 * work here: outside a secure context (http from another address) the browser offers none.
 * Returns true when the page is fine.
 */
function checkSecureContext() {
    if (window.isSecureContext && navigator.mediaDevices) {
        return true;
    }
    var https = 'https://' + window.location.hostname + ':' + getPortsConfig().legacy.https +
        window.location.pathname;
    var el = document.getElementById('notifyFlash');
    if (!el) {
        el = document.createElement('p');
        el.className = 'error';
        document.body.insertBefore(el, document.body.firstChild);
    }
    el.id = 'notifyFlash';
    el.textContent = 'The camera needs https or localhost: this page was opened over plain http ' +
        'from another address, where browsers offer no camera. Open ' + https + ' instead.';
    return false;
}

/** The reason a stream failed: the SDK's error detail when there is one, else its info. */
function failureText(stream) {
    var detail = stream && typeof stream.getErrorInfo === 'function' ? stream.getErrorInfo() : '';
    return detail || (stream && stream.getInfo ? stream.getInfo() : '') || '';
}
