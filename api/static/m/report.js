/* GridPatrol phone page, tab 上报 Report: an event (kind, text, up to 3 photos, the place from
 * the phone or a tap on the map) becomes an incident at the worker's grid (网格预警) and climbs
 * by the dispatch rules. The report is kept on the phone first (photos resized, photos.js), then
 * sent (outbox.js): offline it waits, and goes once when the signal returns. My reports list
 * the server's view (status as dispatchers act, polled) and what still waits on the phone.
 */
(function () {
  'use strict';

  var M = window.GPM;
  var esc = M.esc;
  var MAX_PHOTOS = 3;
  var FIX_FRESH_MS = 30000;  // a patrol's reading this recent is where the worker is
  var tab = M.tabs.report = {photos: [], place: null, view: null, phoneFix: null, rows: []};

  function error(id, text) {
    var box = M.$(id);
    box.hidden = !text;
    box.textContent = text || '';
  }

  /* ---- photos ----------------------------------------------------------------------------- */
  function renderPhotos() {
    var list = M.$('m-photos');
    list.innerHTML = '';
    tab.photos.forEach(function (p, i) {
      var li = document.createElement('li');
      li.className = 'm-photo';
      var img = document.createElement('img');
      img.src = p.url;
      img.alt = p.name;
      var remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'm-photo-remove';
      remove.textContent = '删除 Remove';
      remove.addEventListener('click', function () {
        URL.revokeObjectURL(p.url);
        tab.photos.splice(i, 1);
        renderPhotos();
      });
      var size = document.createElement('small');
      size.textContent = p.width + '×' + p.height + ' · ' + Math.round(p.blob.size / 1024) + ' KB';
      li.appendChild(img);
      li.appendChild(size);
      li.appendChild(remove);
      list.appendChild(li);
    });
  }

  function addPhotos(files) {
    var problems = [];
    var chain = Promise.resolve();
    Array.prototype.forEach.call(files, function (file) {
      chain = chain.then(function () {
        if (tab.photos.length >= MAX_PHOTOS) {
          problems.push('最多 3 张照片，已忽略 at most 3 photos; left out: ' + file.name);
          return undefined;
        }
        return M.resizePhoto(file).then(function (p) {
          p.url = URL.createObjectURL(p.blob);
          tab.photos.push(p);
        }, function (err) { problems.push(M.errorText(err)); });
      });
    });
    return chain.then(function () {
      renderPhotos();
      error('m-photo-error', problems.join('\n'));
    });
  }

  /* ---- the place ---------------------------------------------------------------------------- */
  function where() {
    var chosen = document.querySelector('#m-report-form input[name=where]:checked');
    return chosen ? chosen.value : 'phone';
  }

  function describePlace() {
    var box = M.$('m-where');
    var grid = M.tabs.grid.data && M.tabs.grid.data.grid;
    var p = where() === 'map' ? tab.place : tab.phoneFix;
    if (!p) {
      box.textContent = where() === 'map' ? '请在地图上点选位置 tap the place on the map'
        : '正在获取手机定位… getting the phone\'s location…';
      return;
    }
    var out = grid && !M.inside(grid.geometry, p.lon, p.lat);
    box.innerHTML = '位置 place: ' + p.lon.toFixed(5) + ', ' + p.lat.toFixed(5) +
      (out ? '<br><b class="m-warn">该位置在您的网格外：可以上报，将被标注。 Outside your ' +
             'grid: you may report it; it will be flagged.</b>' : '');
    if (tab.view) { tab.view.mark(p.lon, p.lat); }
  }

  function phoneFix() {
    var last = M.tabs.patrol.last;
    if (last && Date.now() - Date.parse(last.time) < FIX_FRESH_MS) {
      return Promise.resolve({lon: last.lon, lat: last.lat});
    }
    return new Promise(function (resolve, reject) {
      if (!navigator.geolocation) { reject(new Error('no geolocation')); return; }
      navigator.geolocation.getCurrentPosition(function (pos) {
        resolve({lon: pos.coords.longitude, lat: pos.coords.latitude});
      }, reject, {enableHighAccuracy: true, maximumAge: 0, timeout: 20000});
    });
  }

  function locate() {
    return phoneFix().then(function (p) {
      tab.phoneFix = p;
      describePlace();
      return p;
    }, function (err) {
      tab.phoneFix = null;
      M.$('m-where').textContent = '无法获取手机定位（' + (err.message || err.code) + '），请在地图上' +
        '点选。 No location from the phone: tap the place on the map.';
      return null;
    });
  }

  /* ---- sending ------------------------------------------------------------------------------ */
  function submit(form) {
    var kind = form.kind.value, text = form.text.value.trim();
    var problems = [];
    if (!kind) { problems.push('请选择事件类型 choose the kind'); }
    if (!text) { problems.push('请填写情况描述 describe what happened'); }
    if (text.length > 2000) { problems.push('描述不能超过 2000 字 at most 2000 characters'); }
    var code = M.tabs.grid.code;
    if (!code || !M.me.grids.some(function (g) { return g.code === code; })) {
      code = M.me.grids[0] && M.me.grids[0].code;
    }
    if (!code) { problems.push('您没有负责的网格 you hold no grid'); }
    var place = where() === 'map' ? tab.place : null;
    if (where() === 'map' && !place) { problems.push('请在地图上点选位置 tap the place on the map'); }
    if (problems.length) { error('m-report-error', problems.join('\n')); return Promise.resolve(); }
    error('m-report-error', '');
    var button = M.$('m-report-send');
    button.disabled = true;
    var located = where() === 'phone' ? locate() : Promise.resolve(place);
    return located.then(function (p) {
      if (!p) {
        error('m-report-error', '没有位置：请在地图上点选 no location: tap the place on the map');
        return undefined;
      }
      var fields = {kind: kind, text: text, grid_code: code, lon: p.lon.toFixed(6),
                    lat: p.lat.toFixed(6)};
      return M.queueReport(fields, tab.photos).then(function () {
        M.say(navigator.onLine ? '正在发送上报 sending the report…'
          : '已保存在手机上，联网后自动发送 saved on the phone; it is sent when the signal ' +
            'returns', navigator.onLine ? 'note' : 'ok');
        tab.photos.forEach(function (ph) { URL.revokeObjectURL(ph.url); });
        tab.photos = [];
        renderPhotos();
        form.reset();
        tab.place = null;
        if (tab.view) { tab.view.mark(null); }
        describePlace();
        renderList();
      });
    }).then(function () { button.disabled = false; }, function (err) {
      button.disabled = false;
      error('m-report-error', M.errorText(err));
    });
  }

  /* ---- my reports --------------------------------------------------------------------------- */
  function renderList(pending) {
    var waiting = pending ? pending.reports : tab.waiting || [];
    tab.waiting = waiting;
    var local = waiting.map(function (r) {
      var failed = r.state === 'failed';
      return '<li class="m-report ' + (failed ? 'm-report-failed' : 'm-report-queued') +
        '" data-client="' + esc(r.client_id) + '"><b>' + esc(r.fields.kind) + '</b> · ' +
        (failed ? '<span class="m-error-inline">未被接受 refused: ' + esc(r.error) + '</span>'
          : '<span class="m-status">待发送 queued</span>') + '<br><small>' +
        esc(r.fields.text.substring(0, 80)) + ' · ' + r.photos.length + ' 照片 photo(s) · ' +
        esc(M.time(r.created_at)) + '</small>' + (failed ? '<br><button type="button" ' +
        'class="m-discard" data-client="' + esc(r.client_id) + '">删除 Discard</button>' : '') +
        '</li>';
    }).join('');
    var sent = tab.rows.map(function (r) {
      return '<li class="m-report m-report-sent m-st-' + esc(r.status) + '" data-id="' +
        esc(r.id) + '" data-client="' + esc(r.client_id) + '"><b>#' + esc(r.id) + ' ' +
        esc(r.kind) + '</b> · <span class="m-status">' + esc(M.STATUS[r.status] || r.status) +
        '</span><br><small>' + esc(M.LEVELS[r.escalation] || r.escalation || '') +
        (r.outside_grid ? ' · <b class="m-warn">网格外 outside my grid</b>' : '') +
        (r.photos ? ' · ' + esc(r.photos) + ' 照片 photo(s)' : '') +
        (r.responder ? ' · 处置 responder ' + esc(r.responder) : '') + ' · ' +
        esc(M.time(r.created_at)) + '</small><br><small>' + esc((r.text || '').substring(0, 80)) +
        '</small></li>';
    }).join('');
    M.$('m-reports').innerHTML = local + sent ||
      '<li class="m-empty">尚无上报 no report yet</li>';
  }

  tab.pending = renderList;

  tab.poll = function () {
    if (!navigator.onLine) { return Promise.resolve(); }
    return M.send(M.API + '/reports').then(function (r) {
      tab.rows = Array.isArray(r.body) ? r.body : (r.body && r.body.reports) || [];
      tab.loads = (tab.loads || 0) + 1;
      renderList();
    }).catch(function () { return null; });
  };
  tab.refresh = tab.poll;

  tab.gridChanged = function (data) {
    if (tab.view) { tab.view.drawGrid(data, true); }
    describePlace();
  };

  tab.start = function (me) {
    M.$('m-kind').innerHTML = '<option value="">请选择 choose…</option>' +
      (me.event_kinds || []).map(function (k) {
        return '<option value="' + esc(k) + '">' + esc(k) + '</option>';
      }).join('');
    var form = M.$('m-report-form');
    form.addEventListener('submit', function (e) { e.preventDefault(); submit(form); });
    form.addEventListener('change', function (e) {
      if (e.target.name === 'where') {
        if (where() === 'phone') { locate(); }
        describePlace();
      }
    });
    M.$('m-photo').addEventListener('change', function (e) {
      var input = e.target;
      addPhotos(input.files).then(function () { input.value = ''; });
    });
    M.$('m-reports').addEventListener('click', function (e) {
      var t = e.target;
      if (t && t.classList.contains('m-discard')) { M.discard(t.getAttribute('data-client')); }
    });
    tab.poll();
  };

  tab.show = function () {
    if (!tab.view) {
      tab.view = new M.GridMap(M.$('m-report-map'), M.cfg, null);
      tab.view.onTap(function (p) {
        tab.place = {lon: p[0], lat: p[1]};
        var radio = document.querySelector('#m-report-form input[name=where][value=map]');
        radio.checked = true;
        describePlace();
      });
      if (M.tabs.grid.data) { tab.view.drawGrid(M.tabs.grid.data, true); }
    }
    tab.view.shown();
    if (M.tabs.grid.data) { tab.view.fit(); }
    tab.poll();  // the statuses as they are now (then every POLL_MS while the page is open)
    if (where() === 'phone') { locate(); } else { describePlace(); }
  };
}());
