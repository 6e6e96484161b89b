/* GridPatrol phone page, tab 我的网格 My grid: the grid on the map with its coverage of the
 * last 7 days (all, by vehicle, on foot), blind spots, alarm points, households, the village's
 * patrol vehicles and when they last passed, and the worker's last check-in.
 * A grid that is not the worker's answers 404: the page says so and draws nothing.
 * /m/?grid=CODE opens a given grid (a link from a task or a message).
 */
(function () {
  'use strict';

  var M = window.GPM;
  var esc = M.esc;
  var view = null;  // the GridMap
  var tab = M.tabs.grid = {code: null, data: null, loads: 0};

  function pct(share) {
    return share === null || share === undefined ? '–' : (share * 100).toFixed(0) + ' %';
  }

  function fact(key, zh, en, value) {
    return '<div class="m-fact" data-fact="' + key + '"><dt>' + zh + ' <small>' + en +
      '</small></dt><dd>' + value + '</dd></div>';
  }

  function bar(share, cls) {
    var w = Math.max(0, Math.min(100, (share || 0) * 100));
    return '<span class="m-bar"><span class="m-bar-fill ' + cls + '" style="width:' +
      w.toFixed(0) + '%"></span></span>';
  }

  function render(data) {
    var c = data.coverage || {};
    var last = data.last_checkin;
    var grid = (data.grid && data.grid.properties) || {};
    M.$('m-grid-facts').innerHTML =
      fact('grid', '网格', 'Grid', esc(grid.code || tab.code) + ' ' + esc(grid.name || '')) +
      fact('coverage', '近 ' + (c.days || 7) + ' 天覆盖率', 'Coverage, last ' + (c.days || 7) +
           ' days', '<b>' + pct(c.share) + '</b>' + bar(c.share, 'm-all')) +
      fact('vehicle', '车巡', 'By vehicle', pct(c.vehicle_share) + bar(c.vehicle_share, 'm-car')) +
      fact('foot', '步巡', 'On foot', pct(c.foot_share) + bar(c.foot_share, 'm-foot')) +
      fact('last-patrol', '最近巡逻', 'Last patrol', esc(M.time(c.last_patrol_at))) +
      fact('households', '户数', 'Households',
           esc(data.households === null || data.households === undefined ? '–'
               : data.households)) +
      fact('blind', '盲区', 'Blind spots',
           esc(((data.blind_spots && data.blind_spots.features) || []).length)) +
      fact('alerts', '报警点', 'Alarm points',
           esc(((data.alert_points && data.alert_points.features) || []).length)) +
      fact('checkin', '最近打卡', 'Last check-in', last ?
           esc(M.time(last.started_at)) + ' → ' + esc(last.ended_at ? M.time(last.ended_at)
                                                      : '进行中 ongoing') +
           ' · ' + esc(last.fixes) + ' 定位 fixes' +
           (last.staff_name ? ' · ' + esc(last.staff_name) : '') : '无 none yet');
    var vehicles = data.vehicles || [];
    M.$('m-vehicles').innerHTML = vehicles.map(function (v) {
      return '<li class="m-vehicle" data-device="' + esc(v.device_id) + '"><b>' +
        esc(v.plate || v.name || v.device_id) + '</b> ' + esc(v.plate && v.name ? v.name : '') +
        '<br><small>最近经过 last passed: ' + (v.last_passed_at ? esc(M.time(v.last_passed_at))
        : '7 天内未经过 not in 7 days') + '</small></li>';
    }).join('') || '<li class="m-empty">本村无巡逻车 no patrol vehicle in the village</li>';
  }

  tab.load = function (code) {
    tab.code = code;
    M.show('m-grid-error', false);
    return M.send(M.API + '/grids/' + encodeURIComponent(code)).then(function (r) {
      if (tab.code !== code) { return; }
      tab.data = r.body;
      tab.loads += 1;
      var note = M.$('m-offline-data');
      note.hidden = !r.offline;
      note.textContent = r.offline ? '离线副本 offline copy, kept ' + M.time(r.offline) : '';
      var first = tab.drawn !== code;
      view.drawGrid(r.body, first);
      tab.drawn = code;
      if (first) { tab.fitted = !M.$('m-pane-grid').hidden; }
      render(r.body);
      if (M.tabs.report && M.tabs.report.gridChanged) { M.tabs.report.gridChanged(r.body); }
    }).catch(function (err) {
      if (tab.code !== code) { return; }
      var box = M.$('m-grid-error');
      box.hidden = false;
      if (err.status === 404) {
        box.textContent = '找不到网格 ' + code + '，或它不是您的网格（只能查看自己的网格）。 ' +
          'Grid ' + code + ' was not found, or it is not yours: you can see only your own grid(s).';
        tab.data = null;
        view.drawGrid(null);
        M.$('m-grid-facts').innerHTML = '';
        M.$('m-vehicles').innerHTML = '';
      } else {
        box.textContent = '网格数据未能加载 the grid could not be loaded: ' + M.errorText(err);
      }
    });
  };

  tab.start = function (me) {
    view = tab.view = new M.GridMap(M.$('m-map'), M.cfg, function () {
      M.show('m-basemap-note', true);
    });
    var pick = M.$('m-grid-pick');
    pick.innerHTML = me.grids.map(function (g) {
      return '<option value="' + esc(g.code) + '">' + esc(g.name || g.code) + ' · ' +
        esc(g.code) + '</option>';
    }).join('');
    var asked = new URLSearchParams(location.search).get('grid');
    if (asked && !me.grids.some(function (g) { return g.code === asked; })) {
      pick.insertAdjacentHTML('beforeend', '<option value="' + esc(asked) + '">' + esc(asked) +
                              '</option>');
    }
    pick.addEventListener('change', function () { tab.load(pick.value); });
    var first = asked || (me.grids[0] && me.grids[0].code);
    if (first) {
      pick.value = first;
      tab.load(first);
    } else {
      M.$('m-grid-error').hidden = false;
      M.$('m-grid-error').textContent = '您目前没有负责的网格 you hold no grid at present';
    }
    M.$('m-grid-refresh').addEventListener('click', function () { tab.refresh(); });
  };

  tab.show = function () {
    if (view) { view.shown(); }
    if (tab.data && !tab.fitted) { view.fit(); tab.fitted = true; }  // drawn while hidden
  };

  tab.refresh = function () {
    if (tab.code) { return tab.load(tab.code); }
    return Promise.resolve();
  };

  /* the patrol under way, drawn on the grid */
  tab.drawTrack = function (points) { if (view) { view.drawTrack(points); } };
}());
