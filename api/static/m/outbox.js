/* GridPatrol phone page: what waits to be sent (patrols, their fixes, reports) and the sending.
 *
 * Everything the worker makes is first written to the phone (store.js) with a client id, then
 * sent by one flush at a time, in order: a patrol's start, its fixes (≤ 500 a request), its
 * stop; then the reports, each one request (multipart, photos included). An item leaves the
 * phone only when the server has answered it: 2xx → done; a refusal (4xx) → kept as failed with
 * the server's reason, never retried by itself; no network or a server error → kept, tried
 * again when the phone is online. Replays are harmless: the server is idempotent by client id
 * (patrols, reports) and by fix time (fixes), so each is stored exactly once.
 */
(function () {
  'use strict';

  var M = window.GPM = window.GPM || {};
  var API = '/api/v1/m';
  var FIX_BATCH = 500;

  /* One request to this server. Resolves {status, body}; rejects with .kind 'network' (no
     answer), 'server' (5xx, 408, 429: try later), 'auth' (401, 403: signed out, or not as a
     worker, or the page's CSRF value is of another session), 'refused' (other
     4xx: the item is wrong) and the server's .detail. */
  M.send = function (path, opts) {
    var o = opts || {};
    var method = o.method || 'GET';
    var headers = {'Accept': 'application/json'};
    var body;
    if (method !== 'GET' && M.me && M.me.csrf) { headers['X-CSRF-Token'] = M.me.csrf; }
    if (o.json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(o.json);
    } else if (o.form) {
      body = o.form;  // FormData: the browser writes the multipart boundary
    }
    return fetch(path, {method: method, headers: headers, body: body, credentials: 'same-origin',
                        cache: 'no-store'})
      .then(function (response) {
        return response.text().then(function (text) {
          var parsed = null;
          try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = {detail: text}; }
          if (response.ok) {
            return {status: response.status, body: parsed,
                    offline: response.headers.get('X-GridPatrol-Offline')};
          }
          var err = new Error(M.detail(parsed) || response.statusText);
          err.status = response.status;
          err.detail = M.detail(parsed) || response.statusText;
          err.kind = (response.status === 401 || response.status === 403) ? 'auth'
            : (response.status >= 500 || response.status === 408 || response.status === 429)
              ? 'server' : 'refused';
          // 401: no session (ended, expired, revoked): what the phone kept of it goes
          if (response.status === 401) { M.onSignedOut(err); }
          throw err;
        });
      }, function (e) {
        var err = new Error('network: ' + (e && e.message));
        err.kind = 'network';
        throw err;
      });
  };

  /* the server's reason as one line (FastAPI's detail may be a string, a list or an object) */
  M.detail = function (body) {
    var d = body && (body.detail !== undefined ? body.detail : body.message);
    if (d === null || d === undefined) { return ''; }
    if (typeof d === 'string') { return d; }
    if (Array.isArray(d)) {
      return d.map(function (x) {
        if (typeof x !== 'object' || x === null) { return String(x); }
        var where = (x.loc || []).filter(function (p) { return p !== 'body'; }).join('.');
        return (where ? where + ': ' : '') + (x.msg || JSON.stringify(x));
      }).join('; ');
    }
    return d.message || JSON.stringify(d);
  };

  function mine(item) { return M.me && item.staff_id === M.me.staff_id; }

  /* ---- what to send --------------------------------------------------------------------- */
  M.queueReport = function (fields, photos) {
    var item = {client_id: M.uuid(), type: 'report', staff_id: M.me.staff_id,
                created_at: new Date().toISOString(), fields: fields,
                photos: photos.map(function (p) { return {blob: p.blob, name: p.name}; }),
                state: 'queued'};
    return M.db.put('outbox', item).then(function () { M.flushSoon(); return item; });
  };

  M.startPatrol = function (gridCode) {
    var item = {client_id: M.uuid(), type: 'patrol', staff_id: M.me.staff_id, grid_code: gridCode,
                created_at: new Date().toISOString(), started_at: new Date().toISOString(),
                id: null, stop_at: null, stopped: false, sent: 0, rejected: 0, reasons: {}};
    return M.db.put('outbox', item).then(function () { M.flushSoon(); return item; });
  };

  M.addFix = function (patrol, fix) {
    var row = {client_id: M.uuid(), patrol: patrol.client_id, time: fix.time, lat: fix.lat,
               lon: fix.lon};
    if (fix.accuracy !== null && fix.accuracy !== undefined) { row.accuracy = fix.accuracy; }
    if (fix.speed !== null && fix.speed !== undefined && !isNaN(fix.speed)) {
      row.speed = fix.speed;
    }
    return M.db.put('fixes', row).then(function () { M.flushSoon(); });
  };

  M.stopPatrol = function (patrol) {
    var at = new Date().toISOString();
    return M.db.update('outbox', patrol.client_id, function (p) { p.stop_at = at; })
      .then(function (p) { M.flushSoon(); return p; });
  };

  /* change the stored patrol (never write back a stale copy: the page may have stopped it) */
  function save(p, change) {
    return M.db.update('outbox', p.client_id, function (stored) {
      change(stored);
      change(p);
    }).then(function (stored) {
      if (stored) { p.stop_at = stored.stop_at; }
      return stored;
    });
  }

  M.discard = function (clientId) {
    return M.db.del('outbox', clientId).then(function () { M.changed(); });
  };

  /* ---- sending ---------------------------------------------------------------------------- */
  var flushing = null, again = false;

  M.flushSoon = function () {
    M.changed();
    if (!navigator.onLine || !M.me) { return Promise.resolve(); }
    if (flushing) { again = true; return flushing; }
    flushing = flush().catch(function (err) {
      M.lastSendError = err;
      if (err.kind === 'auth' && err.status !== 401) { M.onSignedOut(err); }  // 401: M.send
    }).then(function () {
      flushing = null;
      M.changed();
      if (again) { again = false; return M.flushSoon(); }
      return undefined;
    });
    return flushing;
  };

  function flush() {
    return M.db.all('outbox').then(function (items) {
      var mineItems = items.filter(mine).sort(function (a, b) {
        return a.created_at < b.created_at ? -1 : 1;
      });
      var chain = Promise.resolve();
      mineItems.forEach(function (item) {
        chain = chain.then(function () {
          if (item.state === 'failed') { return undefined; }
          return item.type === 'patrol' ? sendPatrol(item)
            : sendReport(item);
        });
      });
      return chain;
    });
  }

  function sendPatrol(p) {
    var body = {client_id: p.client_id, at: p.started_at};  // when start was pressed
    if (p.grid_code) { body.grid_code = p.grid_code; }
    var started = p.id ? Promise.resolve() : M.send(API + '/patrols', {
      method: 'POST', json: body
    }).then(function (r) {
      return save(p, function (x) {
        x.id = r.body.id;
        if (r.body.started_at) { x.started_at = r.body.started_at; }
      });
    });
    return started.then(function () { return sendFixes(p); }).then(function () {
      if (!p.stop_at || p.stopped) { return undefined; }
      return M.send(API + '/patrols/' + encodeURIComponent(p.id) + '/stop', {
        method: 'POST', json: {at: p.stop_at}
      }).then(function (r) {
        return save(p, function (x) { x.stopped = true; x.result = r.body; });
      }).then(function () { M.patrolStopped(p); });
    }).then(function () {
      if (!p.stopped) { return undefined; }
      return M.db.byIndex('fixes', 'patrol', p.client_id).then(function (left) {
        if (left.length) { return undefined; }
        return M.db.put('kv', p, 'lastPatrol').then(function () {
          return M.db.del('outbox', p.client_id);
        });
      });
    }).catch(function (err) {
      if (err.kind !== 'refused') { throw err; }
      // a refused patrol (not mine any more…): kept, shown, not retried
      return save(p, function (x) { x.error = err.detail; x.state = 'failed'; });
    });
  }

  function sendFixes(p) {
    return M.db.byIndex('fixes', 'patrol', p.client_id).then(function (rows) {
      if (!rows.length) { return undefined; }
      rows.sort(function (a, b) { return a.time < b.time ? -1 : 1; });
      var batch = rows.slice(0, FIX_BATCH);
      var fixes = batch.map(function (r) {
        var f = {client_id: r.client_id, time: r.time, lat: r.lat, lon: r.lon};
        if (r.accuracy !== undefined) { f.accuracy = r.accuracy; }
        if (r.speed !== undefined) { f.speed = r.speed; }
        return f;
      });
      return M.send(API + '/patrols/' + encodeURIComponent(p.id) + '/fixes', {
        method: 'POST', json: {fixes: fixes}
      }).then(function (r) {
        var b = r.body || {};
        return save(p, function (x) {
          x.sent += (b.accepted || 0) + (b.duplicates || 0);
          (b.rejected || []).forEach(function (y) {
            x.rejected += 1;
            x.reasons[y.reason] = (x.reasons[y.reason] || 0) + 1;
          });
        }).then(function () {
          return M.db.delMany('fixes', batch.map(function (x) { return x.client_id; }));
        }).then(function () {
          M.changed();
          return rows.length > FIX_BATCH ? sendFixes(p) : undefined;
        });
      });
    });
  }

  function sendReport(item) {
    var form = new FormData();
    form.append('client_id', item.client_id);
    Object.keys(item.fields).forEach(function (k) {
      var v = item.fields[k];
      if (v !== null && v !== undefined && v !== '') { form.append(k, String(v)); }
    });
    item.photos.forEach(function (p) { form.append('photo', p.blob, p.name); });
    return M.send(API + '/reports', {method: 'POST', form: form}).then(function (r) {
      return M.db.put('kv', r.body, 'sent:' + item.client_id).then(function () {
        return M.db.del('outbox', item.client_id);
      }).then(function () { M.sentReport(item, r.body); });
    }, function (err) {
      if (err.kind !== 'refused') { throw err; }
      item.state = 'failed';
      item.error = err.detail;
      item.status = err.status;
      return M.db.put('outbox', item).then(function () { M.changed(); });
    });
  }

  /* what waits of the signed-in worker's (another worker's items on a shared phone stay
     queued under that worker, neither counted nor sent here):
     {reports: [...], patrols: [...], fixes: [...]} */
  M.pending = function () {
    return Promise.all([M.db.all('outbox'), M.db.all('fixes')]).then(function (got) {
      var items = got[0].filter(mine);
      var patrols = items.filter(function (i) { return i.type === 'patrol'; });
      var ids = {};
      patrols.forEach(function (p) { ids[p.client_id] = true; });
      return {
        reports: items.filter(function (i) { return i.type === 'report'; }),
        patrols: patrols,
        fixes: got[1].filter(function (f) { return ids[f.patrol] === true; })
      };
    });
  };

  /* hooks the page sets (app.js) */
  M.changed = M.changed || function () {};
  M.sentReport = M.sentReport || function () {};
  M.onSignedOut = M.onSignedOut || function () {};
  M.patrolStopped = M.patrolStopped || function () {};
}());
