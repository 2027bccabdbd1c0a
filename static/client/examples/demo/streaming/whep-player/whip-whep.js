/**
 * WHIP and WHEP in a few lines, for the demo pages (no SDK): POST the SDP offer with
 * Content-Type application/sdp (and a Bearer token if given), apply the 201's answer, remember
 * the session resource (Location); stop() closes the connection and DELETEs the resource.
 * sluice is ICE-lite and learns the browser's address from its connectivity checks, so the
 * offer is sent at once, without waiting for candidates or trickling them.
 */
'use strict';

/** The endpoint on this server: /whip/<name> or /whep/<name>. */
function whipEndpoint(kind, name) {
    return window.location.origin + '/' + kind + '/' + encodeURIComponent(name);
}

/** Start a session; resolves with {resource, pc, stop()} or rejects with the server's reason. */
function whipWhepStart(endpoint, pc, token, onState) {
    pc.onconnectionstatechange = function () {
        if (onState) {
            onState(pc.connectionState);
        }
    };
    var offer;
    return pc.createOffer().then(function (o) {
        offer = o;
        var headers = {'Content-Type': 'application/sdp'};
        if (token) {
            headers.Authorization = 'Bearer ' + token;
        }
        return fetch(endpoint, {method: 'POST', headers: headers, body: o.sdp});
    }).then(function (res) {
        return res.text().then(function (body) {
            if (res.status !== 201) {
                pc.close();
                throw new Error(res.status + ' ' + (body || res.statusText));
            }
            var resource = new URL(res.headers.get('Location'), endpoint).href;
            return pc.setLocalDescription(offer).then(function () {
                return pc.setRemoteDescription({type: 'answer', sdp: body});
            }).then(function () {
                return {
                    resource: resource,
                    pc: pc,
                    stop: function () {
                        pc.close();
                        var headers = token ? {Authorization: 'Bearer ' + token} : {};
                        return fetch(resource, {method: 'DELETE', headers: headers}).catch(function () {});
                    }
                };
            });
        });
    });
}
