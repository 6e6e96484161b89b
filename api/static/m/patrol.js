/* GridPatrol phone page, tab 巡查 Patrol: a foot patrol check-in (巡查打卡).
 *
 * Start makes a patrol (client id, kept on the phone); while it runs, the browser's
 * geolocation (watchPosition) gives fixes, each kept on the phone first and sent in batches to
 * /api/v1/m/patrols/{id}/fixes, which stores them through the normal ingest path as the
 * worker's handheld device: so they count in the grid's coverage as foot patrol. Offline, the
 * fixes wait on the phone and go when the signal returns. Stop ends it (also sent when online).
 * The running patrol is remembered per worker (kv 'activePatrol:<staff id>'): on a shared
 * phone, the next worker never walks on under the last one's patrol. Signing out stops it.
 */
(function () {
  'use strict';

  var M = window.GPM;
  var esc = M.esc;
  var tab = M.tabs.patrol = {active: null, watch: null, fixes: 0, track: [], last: null};

  function button() {
    var b = M.$('m-patrol-toggle');
    b.textContent = tab.active ? '结束巡查 Stop patrol' : '开始巡查 Start patrol';
    b.classList.toggle('m-stop', !!tab.active);
  }

  function render(pending) {
    var p = tab.active;
    var waiting = pending ? pending.fixes.filter(function (f) {
      return p && f.patrol === p.client_id;
    }).length : 0;
    var stored = pending && p ? pending.patrols.filter(function (x) {
      return x.client_id === p.client_id;
    })[0] : null;
    var sent = stored ? stored.sent : 0, rejected = stored ? stored.rejected : 0;
    var reasons = stored ? Object.keys(stored.reasons || {}).map(function (k) {
      return k + ' ' + stored.reasons[k];
    }).join(', ') : '';
    var row = function (key, zh, en, value) {
      return '<div class="m-fact" data-fact="' + key + '"><dt>' + zh + ' <small>' + en +
        '</small></dt><dd>' + value + '</dd></div>';
    };
    M.$('m-patrol-facts').innerHTML = p ? (
      row('state', '状态', 'State', '巡查中 on patrol' + (stored && stored.id ? ' #' +
          esc(stored.id) : ' (待登记 not yet registered)')) +
      row('started', '开始', 'Started', esc(M.time(p.started_at))) +
      row('recorded', '已记录定位', 'Fixes recorded', esc(tab.fixes)) +
      row('sent', '已发送', 'Sent', esc(sent)) +
      row('waiting', '待发送', 'Waiting', esc(waiting)) +
      (rejected ? row('rejected', '被过滤', 'Filtered out', esc(rejected) + ' (' + esc(reasons) +
                      ')') : '') +
      row('accuracy', '定位精度', 'Accuracy', tab.last && tab.last.accuracy ?
          '± ' + Math.round(tab.last.accuracy) + ' m' : '–')
    ) : '';
  }

  /* where the running patrol of a worker is remembered */
  function key(staffId) { return 'activePatrol:' + staffId; }

  function stopWatch() {
    if (tab.watch !== null && navigator.geolocation) {
      navigator.geolocation.clearWatch(tab.watch);
    }
    tab.watch = null;
  }

  function onFix(pos) {
    if (!tab.active || !M.me || tab.active.staff_id !== M.me.staff_id) { return; }
    var c = pos.coords;
    var fix = {time: new Date(pos.timestamp || Date.now()).toISOString(), lat: c.latitude,
               lon: c.longitude, accuracy: c.accuracy,
               speed: c.speed === null ? null : c.speed};
    if (tab.last && tab.last.time === fix.time) { return; }  // the same reading twice
    tab.last = fix;
    tab.fixes += 1;
    tab.track.push([fix.lon, fix.lat]);
    if (M.tabs.grid.drawTrack) { M.tabs.grid.drawTrack(tab.track); }
    M.show('m-patrol-error', false);
    M.addFix(tab.active, fix);
  }

  function onGeoError(err) {
    var box = M.$('m-patrol-error');
    box.hidden = false;
    box.textContent = err.code === 1
      ? '定位权限被拒绝：请在浏览器设置中允许本页使用位置。 Location permission denied: allow ' +
        'this page to use your location in the browser settings.'
      : '暂时无法定位（' + err.message + '），仍在尝试。 No position yet (' + err.message +
        '); still trying.';
  }

  function watch() {
    if (!navigator.geolocation) {
      onGeoError({code: 0, message: '本机不支持定位 this phone has no geolocation'});
      return;
    }
    tab.watch = navigator.geolocation.watchPosition(onFix, onGeoError, {
      enableHighAccuracy: true, maximumAge: 0, timeout: 30000
    });
  }

  tab.toggle = function () {
    if (!tab.active) {
      var code = M.tabs.grid.code;
      var mine = M.me.grids.some(function (g) { return g.code === code; });
      return M.startPatrol(mine ? code : null).then(function (p) {
        tab.active = p;
        tab.fixes = 0;
        tab.track = [];
        M.db.put('kv', {client_id: p.client_id, staff_id: p.staff_id}, key(p.staff_id));
        watch();
        button();
        M.say('巡查已开始 patrol started', 'ok');
        M.changed();
      });
    }
    var p = tab.active;
    stopWatch();
    tab.active = null;
    M.db.del('kv', key(p.staff_id));
    button();
    return M.stopPatrol(p).then(function () {
      M.say('巡查已结束 patrol stopped · ' + tab.fixes + ' 定位 fixes' +
            (navigator.onLine ? '' : '（联网后发送 sent when online）'), 'ok');
      tab.poll();
    });
  };

  /* the signed-in worker's patrol still running when the page was closed (never another
     worker's: theirs stays on the phone, queued under them) */
  function resume(me) {
    var staffId = me.staff_id;
    var legacy = M.db.get('kv', 'activePatrol').then(function (id) {  // before 'activePatrol:N'
      if (!id) { return null; }
      return M.db.get('outbox', typeof id === 'string' ? id : id.client_id).then(function (p) {
        if (!p || p.staff_id !== staffId) { return null; }
        return M.db.del('kv', 'activePatrol').then(function () {
          return M.db.put('kv', {client_id: p.client_id, staff_id: staffId}, key(staffId));
        }).then(function () { return p.client_id; });
      });
    }).catch(function () { return null; });
    return legacy.then(function (moved) {
      return moved ? {client_id: moved, staff_id: staffId} : M.db.get('kv', key(staffId));
    }).then(function (kept) {
      if (!kept || kept.staff_id !== staffId) { return null; }
      return M.db.get('outbox', kept.client_id);
    }).then(function (p) {
      if (p && !p.stop_at && p.staff_id === staffId && M.me && M.me.staff_id === staffId) {
        tab.active = p;
        watch();
      }
      button();
      M.changed();
    });
  }

  tab.start = function (me) {
    M.$('m-patrol-toggle').addEventListener('click', function () { tab.toggle(); });
    resume(me);
    tab.poll();
  };

  /* the worker signs out ('signout': the patrol ends here, its stop and fixes wait on the
     phone under this worker) or the session ended ('ended': the patrol is kept for when the
     same worker signs in again); either way the position is no longer followed */
  tab.signedOut = function (how) {
    var p = tab.active;
    stopWatch();
    tab.active = null;
    tab.fixes = 0;
    tab.track = [];
    tab.last = null;
    button();
    M.$('m-patrol-facts').innerHTML = '';
    M.$('m-patrols').innerHTML = '';
    if (M.tabs.grid.drawTrack) { M.tabs.grid.drawTrack([]); }
    if (how !== 'signout' || !p) { return Promise.resolve(); }
    return Promise.all([M.db.del('kv', key(p.staff_id)), M.stopPatrol(p)])
      .catch(function () { return null; });
  };

  tab.pending = render;

  /* my recent patrols (from the server) */
  tab.poll = function () {
    if (!navigator.onLine) { return Promise.resolve(); }
    return M.send(M.API + '/patrols?limit=5').then(function (r) {
      var rows = Array.isArray(r.body) ? r.body : (r.body && r.body.patrols) || [];
      M.$('m-patrols').innerHTML = rows.map(function (p) {
        return '<li class="m-patrol" data-id="' + esc(p.id) + '">' + esc(M.time(p.started_at)) +
          ' → ' + (p.ended_at ? esc(M.time(p.ended_at)) : '进行中 ongoing') + '<br><small>' +
          esc(p.fixes === undefined ? '' : p.fixes + ' 定位 fixes') +
          (p.km === undefined || p.km === null ? '' : ' · ' + esc(Number(p.km).toFixed(2)) +
           ' km') + '</small></li>';
      }).join('') || '<li class="m-empty">尚无巡查 no patrol yet</li>';
    }).catch(function () { return null; });
  };

  tab.show = function () { M.changed(); };

  M.patrolStopped = function () { tab.poll(); };  // the server has it: list it as ended
}());
