/* GridPatrol phone page's service worker (served as /m/sw.js, scope /m/).
 *
 * Keeps the page usable on a weak signal: the shell (the page and its scripts, styles and
 * Leaflet) is stored at install and served from here when the network fails; the worker's data
 * (/api/v1/m/me, grids, reports, tasks, patrols) is fetched from the network first and the last
 * good answer kept, answered from here offline with the header X-GridPatrol-Offline (when it was
 * kept). Writes are never touched here: the page queues them itself (IndexedDB) and sends each
 * once, the server being idempotent by client id. Other hosts (basemap tiles) are not touched.
 */
'use strict';

var VERSION = 'gp-m-3';
var SHELL = 'gp-m-shell-' + VERSION;
var DATA = 'gp-m-data';
var ASSETS = [
  '/m/',
  '/static/vendor/leaflet/leaflet.css',
  '/static/vendor/leaflet/leaflet.js',
  '/static/maps/gridpatrol.js',
  '/static/m/mobile.css',
  '/static/m/store.js',
  '/static/m/photos.js',
  '/static/m/gridmap.js',
  '/static/m/outbox.js',
  '/static/m/app.js',
  '/static/m/grid.js',
  '/static/m/patrol.js',
  '/static/m/report.js',
  '/static/m/tasks.js',
  '/static/m/manifest.webmanifest',
  '/static/m/icon.svg'
];
var DATA_PATHS = /^\/api\/v1\/m\/(me|grids\/[^/]+|reports|tasks|patrols)$/;
/* bumped whenever the kept data is forgotten (sign-out, an ended session): an answer to a
   request made before that is not kept, so a poll still in flight cannot write the last
   worker's data back after it was deleted */
var generation = 0;

function forgetData() {
  generation += 1;
  return caches.delete(DATA);
}

self.addEventListener('install', function (event) {
  event.waitUntil(caches.open(SHELL).then(function (cache) {
    return cache.addAll(ASSETS);
  }).then(function () { return self.skipWaiting(); }));
});

self.addEventListener('activate', function (event) {
  event.waitUntil(caches.keys().then(function (keys) {
    return Promise.all(keys.filter(function (k) {
      return k.indexOf('gp-m-shell-') === 0 && k !== SHELL;
    }).map(function (k) { return caches.delete(k); }));
  }).then(function () { return self.clients.claim(); }));
});

function offlineCopy(cached) {
  return cached.blob().then(function (body) {
    var headers = new Headers(cached.headers);
    headers.set('X-GridPatrol-Offline', cached.headers.get('X-GridPatrol-Kept') || 'yes');
    return new Response(body, {status: cached.status, statusText: cached.statusText,
                               headers: headers});
  });
}

/* the network; a good answer is kept (with when), a failure answered from what was kept */
function networkFirst(request, cacheName, key) {
  var asked = generation;
  return fetch(request).then(function (response) {
    if (cacheName === DATA && response.status === 401) {
      // the session is over (signed out elsewhere, expired, revoked): keep nothing of it
      return forgetData().then(function () { return response; });
    }
    if (response.ok && (cacheName !== DATA || asked === generation)) {
      var copy = response.clone();
      copy.blob().then(function (body) {
        var headers = new Headers(copy.headers);
        headers.set('X-GridPatrol-Kept', new Date().toISOString());
        return caches.open(cacheName).then(function (cache) {
          if (cacheName === DATA && asked !== generation) { return null; }  // forgotten since
          return cache.put(key || request, new Response(body, {
            status: copy.status, statusText: copy.statusText, headers: headers}));
        });
      });
    }
    return response;
  }, function (err) {
    return caches.open(cacheName).then(function (cache) {
      return cache.match(key || request, {ignoreSearch: !!key});
    }).then(function (cached) {
      if (!cached) { throw err; }
      return offlineCopy(cached);
    });
  });
}

/* the shell's files: from here at once, refreshed from the network behind */
function staleWhileRevalidate(request) {
  return caches.open(SHELL).then(function (cache) {
    return cache.match(request).then(function (cached) {
      var fresh = fetch(request).then(function (response) {
        if (response.ok) { cache.put(request, response.clone()); }
        return response;
      });
      if (cached) { fresh.catch(function () { return null; }); return cached; }
      return fresh;
    });
  });
}

self.addEventListener('fetch', function (event) {
  var request = event.request;
  if (request.method !== 'GET') { return; }
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) { return; }
  if (request.mode === 'navigate' && (url.pathname === '/m/' || url.pathname === '/m')) {
    event.respondWith(networkFirst(request, SHELL, '/m/'));
    return;
  }
  if (ASSETS.indexOf(url.pathname) >= 0 && url.pathname !== '/m/') {
    event.respondWith(staleWhileRevalidate(request));
    return;
  }
  if (DATA_PATHS.test(url.pathname)) {
    event.respondWith(networkFirst(request, DATA));
  }
});

/* 'forget-data' (the page signs out, or its session ended): the kept data goes; the page may
   pass a port to hear when it is done */
self.addEventListener('message', function (event) {
  if (event.data !== 'forget-data') { return; }
  var port = event.ports && event.ports[0];
  event.waitUntil(forgetData().then(function () {
    if (port) { port.postMessage('forgotten'); }
  }, function () {
    if (port) { port.postMessage('failed'); }
  }));
});
