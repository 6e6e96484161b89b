/* GridPatrol phone page: the phone's own store (IndexedDB), for a weak signal.
 *
 * Stores: "outbox" (what waits to be sent: patrols and reports, keyed by their client id),
 * "fixes" (a patrol's positions not yet sent, keyed by their client id) and "kv" (the last
 * answers seen, ids of reports already sent). Client ids are crypto.randomUUID(): the server is
 * idempotent by them, so an item sent twice (an answer lost on the way) is stored once.
 */
(function () {
  'use strict';

  var M = window.GPM = window.GPM || {};
  var NAME = 'gridpatrol-m';
  var VERSION = 1;
  var opening = null;

  function open() {
    if (opening) { return opening; }
    opening = new Promise(function (resolve, reject) {
      if (!window.indexedDB) { reject(new Error('IndexedDB unavailable')); return; }
      var req = indexedDB.open(NAME, VERSION);
      req.onupgradeneeded = function () {
        var db = req.result;
        if (!db.objectStoreNames.contains('outbox')) {
          db.createObjectStore('outbox', {keyPath: 'client_id'});
        }
        if (!db.objectStoreNames.contains('fixes')) {
          db.createObjectStore('fixes', {keyPath: 'client_id'}).createIndex('patrol', 'patrol');
        }
        if (!db.objectStoreNames.contains('kv')) { db.createObjectStore('kv'); }
      };
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
    return opening;
  }

  /* one request in its own transaction; resolves with the request's result */
  function run(store, mode, action) {
    return open().then(function (db) {
      return new Promise(function (resolve, reject) {
        var tx = db.transaction(store, mode);
        var req = action(tx.objectStore(store));
        var result;
        if (req) { req.onsuccess = function () { result = req.result; }; }
        tx.oncomplete = function () { resolve(result); };
        tx.onerror = function () { reject(tx.error); };
        tx.onabort = function () { reject(tx.error || new Error('aborted')); };
      });
    });
  }

  M.db = {
    put: function (store, value, key) {
      return run(store, 'readwrite', function (s) {
        return key === undefined ? s.put(value) : s.put(value, key);
      });
    },
    get: function (store, key) {
      return run(store, 'readonly', function (s) { return s.get(key); });
    },
    all: function (store) {
      return run(store, 'readonly', function (s) { return s.getAll(); });
    },
    byIndex: function (store, index, value) {
      return run(store, 'readonly', function (s) { return s.index(index).getAll(value); });
    },
    del: function (store, key) {
      return run(store, 'readwrite', function (s) { return s['delete'](key); });
    },
    /* read, change and write one record in one transaction (no lost update when two parts
       of the page change the same item); resolves with the record written (or undefined) */
    update: function (store, key, change) {
      return open().then(function (db) {
        return new Promise(function (resolve, reject) {
          var tx = db.transaction(store, 'readwrite');
          var s = tx.objectStore(store);
          var written;
          var req = s.get(key);
          req.onsuccess = function () {
            if (req.result === undefined) { return; }
            written = change(req.result) || req.result;
            s.put(written);
          };
          tx.oncomplete = function () { resolve(written); };
          tx.onerror = function () { reject(tx.error); };
        });
      });
    },
    delMany: function (store, keys) {
      return run(store, 'readwrite', function (s) {
        keys.forEach(function (k) { s['delete'](k); });
        return null;
      });
    }
  };

  /* a client id (RFC 4122 v4): crypto.randomUUID where the page is a secure context */
  M.uuid = function () {
    if (window.crypto && crypto.randomUUID) { return crypto.randomUUID(); }
    var b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); });
    return h.slice(0, 4).join('') + '-' + h.slice(4, 6).join('') + '-' + h.slice(6, 8).join('') +
      '-' + h.slice(8, 10).join('') + '-' + h.slice(10).join('');
  };
}());
