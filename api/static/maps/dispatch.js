/* GridPatrol dispatcher console: take a call, the incident list, per incident its timeline,
 * candidates (and why the others were left out) and workflow, the vehicle panel, the alarm
 * phones clustered, and live updates pushed by the server (EventSource on /api/v1/live/stream:
 * a snapshot when the stream opens, then the changes; the page does not poll, unless opened
 * with ?live=poll).
 * Needs gridpatrol.js (GP, GCJ-02 display conversion, API calls) loaded first.
 */
(function () {
  'use strict';

  var GP = window.GP;
  var esc = GP.esc;

  /* What a responder is called on the map and in the lists: the plate, else the name (a grid
   * worker's handheld, 网格员 …), else the terminal's identifier. */
  function label(v) { return v.plate || v.name || v.identifier; }

  GP.state.events = 0;
  GP.state.alerts = 0;
  GP.state.beeps = 0;
  GP.state.live = false;
  GP.state.snapshots = 0;
  GP.incidentRows = {};
  GP.vehicleRows = {};
  GP.skew = 0;  // server clock − this clock, seconds
  GP.fresh = {fresh_s: 300, offline_s: 3600};

  var OVERLAP_S = 5;  // as the server's live poll (api/dispatch/live.py OVERLAP_S)
  var OPEN = ['new', 'dispatched', 'accepted', 'arrived'];
  var STATUS = {
    new: '新警情 new', dispatched: '已派警 dispatched', accepted: '已接警 accepted',
    arrived: '已到达 arrived', cleared: '已处置 cleared', cancelled: '已撤销 cancelled'
  };
  var VEHICLE_STATUS = {available: '空闲 available', busy: '出警 busy', off_duty: '休班 off duty'};
  var FRESH = {live: '在线 live', stale: '定位过旧 stale', offline: '离线 offline'};
  var REASONS = {
    busy: '出警中 busy', off_duty: '休班 off duty', stale: '定位过旧 stale fix',
    offline: '离线 offline', disabled: '停用 disabled', too_far: '超出时限 too far',
    no_route: '无路线 no route', inactive: '未在岗 inactive'
  };
  var EVENT_LABELS = {
    created: '接警 call taken', assigned: '派警 assigned', accept: '已接警 accepted',
    arrive: '到达(人工) arrived (manual)', arrived: '到达(定位) arrived (by fix)',
    clear: '处置完毕 cleared', cancel: '撤销 cancelled', release: '收回 released',
    escalated: '升级 escalated', scope_widened: '扩大范围 scope widened'
  };
  var LEVELS = {grid: '网格 grid', village: '嘎查村 village', township: '苏木乡镇 township',
                county: '旗县 county'};

  function now() { return Date.now() / 1000 + GP.skew; }
  function ago(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) { return '–'; }
    if (seconds < 120) { return Math.max(0, Math.round(seconds)) + ' 秒 s'; }
    if (seconds < 7200) { return Math.round(seconds / 60) + ' 分 min'; }
    if (seconds < 172800) { return (seconds / 3600).toFixed(1) + ' 时 h'; }
    return Math.round(seconds / 86400) + ' 天 d';
  }
  function time(value) {
    var d = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
    return isNaN(d) ? '' : d.toLocaleString('zh-CN', {hour12: false});
  }
  function byId(id) { return document.getElementById(id); }

  /* Count what a Realtime layer shows after each applied update. */
  GP.watch = function (realtime, key) {
    realtime.on('update', function () {
      GP.state[key] = realtime._container.getLayers().length;
    });
    return realtime;
  };

  /* Restyle a Realtime feature for good: the plugin calls the container's resetStyle after
     each update, which restores ``defaultOptions`` — so change those too. */
  function restyle(layer, style) {
    layer.setStyle(style);
    layer.defaultOptions = L.Util.extend({}, layer.defaultOptions || {}, style);
  }

  /* ---- vehicles -------------------------------------------------------------------------- */
  var STATUS_COLOURS = {available: '#009e73', busy: '#d55e00', off_duty: '#0072b2'};

  function freshness(t) {
    var age = now() - t;
    return age <= GP.fresh.fresh_s ? 'live' : age <= GP.fresh.offline_s ? 'stale' : 'offline';
  }

  function vehicleFeature(v) {
    return {
      type: 'Feature', id: v.id,
      geometry: {type: 'Point', coordinates: [v.lon, v.lat]},
      properties: {
        id: v.id, plate: v.plate, identifier: v.identifier, name: v.name, status: v.status,
        village: v.village, village_name: v.village_name, grid: v.grid, speed: v.speed, t: v.t,
        age_s: Math.round(now() - v.t), freshness: freshness(v.t)
      }
    };
  }

  GP.vehicleColour = function (p) {
    if (p.freshness === 'offline') { return '#8c8c8c'; }
    if (p.freshness === 'stale') { return '#f0e442'; }
    return STATUS_COLOURS[p.status] || STATUS_COLOURS.available;
  };

  GP.vehicleLabel = function (p) {
    return '<b>' + esc(p.plate || p.identifier) + '</b> ' + esc(p.name || '') + '<br>' +
      esc(VEHICLE_STATUS[p.status] || p.status) + ' · ' + esc(FRESH[p.freshness]) + ' · ' +
      esc(ago(p.age_s)) + (p.grid ? '<br>网格 grid ' + esc(p.grid) : '');
  };

  /* A snapshot replaces what a live layer shows. It is handed over as data, never through the
     layer's own source: leaflet-realtime drops a fetch's answer when any update started after
     the fetch did, so one pushed change during the snapshot's request lost the whole snapshot
     (the fleet then appeared vehicle by vehicle as each reported again). Features missing from
     the snapshot go. */
  GP.replaceFeatures = function (layer, fc) {
    var keep = {};
    fc.features.forEach(function (f) { keep[String(f.properties.id)] = true; });
    var gone = Object.keys(layer._features).filter(function (id) { return !keep[id]; })
      .map(function (id) { return layer._features[id]; });
    if (gone.length) { layer.remove(gone); }
    layer.update(fc);
  };

  /* The snapshot of the scope's vehicles (compact rows), as features. With ``since`` (the
     server's clock, s), only the vehicles that reported after it, merged into what is drawn:
     what changed while the page opened its stream. */
  GP.loadVehicles = function (since) {
    var url = GP.cfg().vehiclesUrl + (since ? '?since=' + since.toFixed(3) : '');
    return GP.api(url).then(function (body) {
      GP.skew = body.now - Date.now() / 1000;
      GP.fresh = {fresh_s: body.fresh_s, offline_s: body.offline_s};
      GP.vehiclesNow = body.now;
      // a fix pushed while the snapshot was on its way is newer than the snapshot's: kept
      var before = GP.vehicleRows;
      if (since) {
        applyVehicles(body.vehicles.filter(function (v) {
          return !before[v.id] || before[v.id].t < v.t;
        }));
        return;
      }
      var rows = body.vehicles.map(function (v) {
        var had = before[v.id];
        return had && had.t > v.t ? had : v;
      });
      GP.vehicleRows = {};
      rows.forEach(function (v) { GP.vehicleRows[v.id] = v; });
      GP.state.snapshots += 1;
      GP.replaceFeatures(GP.vehicles, GP.displayGeoJSON(
        {type: 'FeatureCollection', features: rows.map(vehicleFeature)}));
      GP.vehiclesChanged();
    }).catch(function (err) { GP.state.lastError = err.message; });
  };
  /* The layers' own source (never started on a timer): the same snapshot, handed over. */
  GP.vehicleSource = function () { return function () { GP.loadVehicles(); }; };

  /* Vehicles are drawn on one canvas, not as 2,000 SVG elements: a league snapshot drew in
     ≈ 0.7 s as SVG and every second's few hundred moves restyled the DOM; the canvas still
     gives each marker its tooltip and clicks. */
  GP.vehicleRenderer = function () {
    if (!GP.vehicleCanvas) {
      // above the alarm phones' cluster boxes (marker pane, 600), below tooltips (650)
      var pane = GP.map().createPane('gp-vehicles');
      pane.style.zIndex = 640;
      GP.vehicleCanvas = L.canvas({padding: 0.5, tolerance: 4, pane: 'gp-vehicles'});
    }
    return GP.vehicleCanvas;
  };

  GP.vehicleMarker = function (feature, latlng) {
    var p = feature.properties;
    return L.circleMarker(latlng, {
      radius: 6, weight: 1.5, color: '#222222', fillColor: GP.vehicleColour(p),
      fillOpacity: 0.95, renderer: GP.vehicleRenderer()
    }).bindTooltip(GP.vehicleLabel(p));
  };

  /* GP.probe, when a benchmark sets it to [], records [vehicle, fix time, when its marker
     moved (ms)] for every new fix drawn (bench/bench_console.py). */
  GP.probeSeen = {};
  GP.vehicleUpdate = function (feature, oldLayer) {
    if (!oldLayer) { return undefined; }
    var c = feature.geometry.coordinates;
    oldLayer.setLatLng(L.latLng(c[1], c[0]));
    var t = feature.properties.t;
    if (GP.probe && GP.probeSeen[feature.properties.id] !== t) {
      GP.probeSeen[feature.properties.id] = t;
      GP.probe.push([feature.properties.id, t, Date.now()]);
    }
    restyle(oldLayer, {fillColor: GP.vehicleColour(feature.properties)});
    oldLayer.setTooltipContent(GP.vehicleLabel(feature.properties));
    return oldLayer;
  };

  function applyVehicles(rows) {
    rows.forEach(function (v) { GP.vehicleRows[v.id] = v; });
    GP.vehicles.update(GP.displayGeoJSON({type: 'FeatureCollection',
                                          features: rows.map(vehicleFeature)}));
    if (GP.followId && rows.some(function (v) { return v.id === GP.followId; })) {
      var f = GP.vehicleRows[GP.followId];
      GP.map().panTo(GP.latLng(f.lon, f.lat));
    }
    GP.vehiclesChanged();
  }

  var pendingVehicles = false;
  GP.vehiclesChanged = function () {
    if (pendingVehicles) { return; }
    pendingVehicles = true;
    setTimeout(function () {
      pendingVehicles = false;
      GP.renderVehicles();
      GP.drawLabels();
      GP.drawRoute();
    }, 250);
  };

  /* Plate labels in the view when zoomed in (a few hundred at most). */
  GP.drawLabels = function () {
    var map = GP.map();
    if (!GP.labelLayer) { GP.labelLayer = L.layerGroup().addTo(map); }
    GP.labelLayer.clearLayers();
    if (map.getZoom() < 13) { return; }
    var bounds = map.getBounds(), n = 0;
    Object.keys(GP.vehicleRows).some(function (id) {
      var v = GP.vehicleRows[id], ll = GP.latLng(v.lon, v.lat);
      if (!bounds.contains(ll)) { return false; }
      L.marker(ll, {interactive: false, keyboard: false, icon: L.divIcon({
        className: 'gp-plate', html: esc(label(v)), iconSize: null,
        iconAnchor: [-8, 8]})}).addTo(GP.labelLayer);
      n += 1;
      return n >= 400;
    });
  };

  /* ---- the vehicle panel ------------------------------------------------------------------- */
  GP.renderVehicles = function () {
    var q = (byId('gp-vehicle-q').value || '').trim().toLowerCase();
    var all = Object.keys(GP.vehicleRows).map(function (id) { return GP.vehicleRows[id]; });
    var hits = all.filter(function (v) {
      return !q || [v.plate, v.identifier, v.name, v.village_name, v.village, v.grid]
        .some(function (s) { return s && String(s).toLowerCase().indexOf(q) >= 0; });
    }).sort(function (a, b) { return String(label(a))
      .localeCompare(String(label(b))); });
    byId('gp-vehicle-count').textContent = hits.length + ' / ' + all.length;
    byId('gp-vehicle-list').innerHTML = '<table class="gp-table"><tr><th>车牌 plate</th>' +
      '<th>状态 status</th><th>定位 fix</th><th>速度 km/h</th><th>网格 grid</th><th></th></tr>' +
      hits.slice(0, 60).map(function (v) {
        var fresh = freshness(v.t);
        return '<tr class="gp-vehicle-row" data-id="' + esc(v.id) + '" data-village="' +
          esc(v.village || '') + '"><td>' + esc(label(v)) + '<br><small>' +
          esc(v.village_name || '') + '</small></td><td><span class="gp-dot" style="background:' +
          GP.vehicleColour({status: v.status, freshness: fresh}) + '"></span>' +
          esc(VEHICLE_STATUS[v.status] || v.status) + (fresh === 'live' ? '' : '<br>' +
          esc(FRESH[fresh])) + '</td><td>' + esc(ago(now() - v.t)) + '</td><td>' +
          (v.speed === null || v.speed === undefined ? '–' : esc(v.speed)) + '</td><td>' +
          esc(v.grid || '–') + '</td><td><button class="gp-follow" data-id="' + esc(v.id) +
          '">' + (GP.followId === v.id ? '停止 stop' : '跟随 follow') + '</button> ' +
          '<button class="gp-text" data-id="' + esc(v.id) + '">短信 text</button></td></tr>';
      }).join('') + '</table>' + (hits.length > 60 ? '<div class="gp-note">仅显示前 60 辆 ' +
      'first 60 shown: 请缩小搜索 narrow the search</div>' : '');
  };

  GP.follow = function (id) {
    GP.followId = GP.followId === id ? null : id;
    var v = GP.vehicleRows[id];
    if (GP.followId && v) {
      GP.map().setView(GP.latLng(v.lon, v.lat), Math.max(GP.map().getZoom(), 13));
    }
    byId('gp-follow').textContent = GP.followId && v ?
      '跟随中 following ' + label(v) : '';
    GP.renderVehicles();
  };

  // JT/T 808 general reply results (0x0001)
  var TERMINAL_ANSWER = {0: '终端已确认 acknowledged', 1: '终端报失败 the terminal failed',
                         2: '终端称消息有误 the terminal found it wrong',
                         3: '终端不支持 not supported by the terminal'};
  /* The command's answer: the terminal answers within seconds of the send, so the page asks
     again once a second, at most ANSWER_TRIES times, until it has one. */
  var ANSWER_TRIES = 15;
  GP.showAnswer = function (name, command, tries) {
    var answered = command.result !== null && command.result !== undefined;
    byId('gp-follow').textContent = '已发送 sent: ' + name + ' · ' + (answered ?
      (TERMINAL_ANSWER[command.result] || '终端应答 answered ' + command.result) :
      (tries < ANSWER_TRIES ? '等待终端应答 awaiting the terminal' : '终端未应答 no answer'));
    if (answered || tries >= ANSWER_TRIES) { return; }
    setTimeout(function () {
      GP.api('/api/v1/jt808/commands/' + encodeURIComponent(command.id)).then(function (row) {
        GP.showAnswer(name, row, tries + 1);
      }).catch(function () { GP.showAnswer(name, command, tries + 1); });
    }, 1000);
  };
  GP.sendText = function (id) {
    var v = GP.vehicleRows[id] || {};
    GP.confirm('发送短信给 send a text to ' + (label(v) || id) +
               ' (JT/T 808 0x8300)', {input: '内容 text', required: true}).then(function (text) {
      return GP.api('/api/v1/jt808/terminals/' + encodeURIComponent(id) + '/commands',
                    {method: 'POST', body: {kind: 'text', text: text}});
    }).then(function (body) {
      if (body === undefined) { return; }
      GP.showAnswer(label(v) || id, body, 0);
    }).catch(function (err) {
      if (err && err.cancelled) { return; }
      byId('gp-follow').textContent = '发送失败 not sent: ' + err.message;
    });
  };

  /* ---- alarm phones, clustered on a pixel grid when zoomed out ------------------------------ */
  var ALERT_COLOURS = {alarm_phone: '#8c510a', informant: '#762a83', camera: '#35978f',
                       station: '#01665e'};
  GP.loadAlertPoints = function () {
    return GP.api(GP.cfg().alertPointsUrl).then(function (body) {
      GP.alertPoints = body.points;
      GP.state.alertPoints = body.points.length;
      GP.drawAlertPoints();
    }).catch(function (err) { GP.state.lastError = err.message; });
  };

  GP.drawAlertPoints = function () {
    var map = GP.map(), layer = GP.alertLayer;
    if (!layer || !GP.alertPoints || !map.hasLayer(layer)) { return; }
    layer.clearLayers();
    var bounds = map.getBounds().pad(0.2), zoom = map.getZoom(), cells = {}, cell = 56;
    GP.alertPoints.forEach(function (a) {
      var ll = GP.latLng(a[1], a[2]);
      if (!bounds.contains(ll)) { return; }
      var p = map.project(ll, zoom);
      var key = zoom >= 13 ? 'p' + a[0] : Math.floor(p.x / cell) + ':' + Math.floor(p.y / cell);
      (cells[key] = cells[key] || []).push([a, ll]);
    });
    var clusters = 0;
    Object.keys(cells).forEach(function (key) {
      var members = cells[key];
      if (members.length === 1) {
        var a = members[0][0];
        L.circleMarker(members[0][1], {radius: 4, weight: 1, color: '#ffffff',
          fillColor: ALERT_COLOURS[a[3]] || '#8c510a', fillOpacity: 0.95,
          className: 'gp-alert-point'}).bindTooltip('报警点 ' + esc(a[4]) + ' · ' +
          esc(a[5] || '')).addTo(layer);
        return;
      }
      var lat = 0, lng = 0;
      members.forEach(function (m) { lat += m[1].lat; lng += m[1].lng; });
      var centre = L.latLng(lat / members.length, lng / members.length);
      var size = members.length < 10 ? 24 : members.length < 100 ? 30 : 36;
      var marker = L.marker(centre, {icon: L.divIcon({className: 'gp-alert-cluster',
        html: '<span>' + members.length + '</span>', iconSize: [size, size]})});
      marker.on('click', function () {
        map.fitBounds(L.latLngBounds(members.map(function (m) { return m[1]; })).pad(0.3));
      });
      marker.bindTooltip(members.length + ' 个报警点 alarm points');
      marker.addTo(layer);
      clusters += 1;
    });
    GP.state.alertClusters = clusters;
  };

  /* ---- incidents --------------------------------------------------------------------------- */
  var INCIDENT_COLOURS = {new: '#b10026', dispatched: '#2166ac', accepted: '#5e3c99',
                          arrived: '#1b7837'};

  function incidentFeature(row) {
    return {type: 'Feature', id: row.id,
            geometry: {type: 'Point', coordinates: [row.lon, row.lat]}, properties: row};
  }

  /* The snapshot: every incident of the list window; the map draws the open ones. */
  GP.loadIncidents = function () {
    return GP.api(GP.cfg().incidentsUrl).then(function (fc) {
      GP.incidentRows = {};
      fc.features.forEach(function (f) {
        var p = f.properties;
        p.lon = f.geometry.coordinates[0];
        p.lat = f.geometry.coordinates[1];
        GP.incidentRows[p.id] = p;
      });
      GP.replaceFeatures(GP.incidents, GP.displayGeoJSON({type: 'FeatureCollection',
        features: fc.features.filter(function (f) {
          return OPEN.indexOf(f.properties.status) >= 0;
        })}));
      GP.renderIncidents();
    }).catch(function (err) { GP.state.lastError = err.message; });
  };
  GP.incidentSource = function () { return function () { GP.loadIncidents(); }; };

  function incidentTip(p) {
    return '警情 #' + esc(p.id) + ' ' + esc(p.kind) + ' · P' + esc(p.priority) + ' · ' +
      esc(STATUS[p.status] || p.status);
  }

  /* Incidents above the vehicles (an incident hidden under a crowd of vehicles is missed). */
  GP.incidentRenderer = function () {
    if (!GP.incidentSvg) {
      GP.map().createPane('gp-incidents').style.zIndex = 645;
      GP.incidentSvg = L.svg({pane: 'gp-incidents'});
    }
    return GP.incidentSvg;
  };

  GP.incidentMarker = function (feature, latlng) {
    var p = feature.properties;
    return L.circleMarker(latlng, {
      radius: 9 + Math.max(0, 5 - (p.priority || 3)), weight: 3, color: '#ffffff',
      fillColor: INCIDENT_COLOURS[p.status] || '#b10026', fillOpacity: 1,
      bubblingMouseEvents: false, className: 'gp-incident gp-incident-' + p.id,
      renderer: GP.incidentRenderer()
    }).bindTooltip(incidentTip(p));
  };

  GP.incidentUpdate = function (feature, oldLayer) {
    if (!oldLayer) { return undefined; }
    restyle(oldLayer, {fillColor: INCIDENT_COLOURS[feature.properties.status] || '#b10026'});
    oldLayer.setTooltipContent(incidentTip(feature.properties));
    return oldLayer;
  };

  GP.onIncident = function (feature, layer) {
    layer.on('click', function () { GP.openIncident(feature.properties.id); });
  };

  function applyIncident(row, events) {
    var known = GP.incidentRows[row.id];
    GP.incidentRows[row.id] = row;
    var feature = GP.displayGeoJSON(incidentFeature(row));
    if (OPEN.indexOf(row.status) >= 0) {
      GP.incidents.update({type: 'FeatureCollection', features: [feature]});
    } else if (GP.incidents._featureLayers && GP.incidents._featureLayers[row.id]) {
      GP.incidents.remove(feature);
    }
    var created = events.some(function (e) { return e.kind === 'created'; });
    if (created && !known) { GP.alarm(row); }
    GP.renderIncidents();
    if (GP.currentId === row.id) { GP.openIncident(row.id, {keepCandidates: true}); }
  }

  /* A new incident: a banner that flashes, and a tone made by WebAudio (no sound file). */
  GP.alarm = function (row) {
    GP.state.alerts += 1;
    var box = byId('gp-alert');
    box.innerHTML = '新警情 New incident #' + esc(row.id) + ' · P' + esc(row.priority) + ' ' +
      esc(row.kind) + ' · ' + esc(row.village_name || row.village_code || '');
    box.setAttribute('data-id', row.id);
    box.className = 'gp-alert gp-alert-on';
    setTimeout(function () { box.className = 'gp-alert gp-alert-shown'; }, 6000);
    GP.beep(row.priority <= 2 ? 2 : 1);
  };

  GP.beep = function (times) {
    try {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) { return; }
      GP.audio = GP.audio || new Ctx();
      var ctx = GP.audio;
      if (ctx.state === 'suspended' && ctx.resume) { ctx.resume(); }
      for (var i = 0; i < times; i++) {
        var t0 = ctx.currentTime + i * 0.35;
        var osc = ctx.createOscillator(), gain = ctx.createGain();
        osc.type = 'square';
        osc.frequency.setValueAtTime(i % 2 ? 660 : 880, t0);
        gain.gain.setValueAtTime(0.0001, t0);
        gain.gain.exponentialRampToValueAtTime(0.15, t0 + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, t0 + 0.3);
        osc.connect(gain);
        gain.connect(ctx.destination);
        osc.start(t0);
        osc.stop(t0 + 0.32);
      }
      GP.state.beeps += 1;
    } catch (e) { GP.state.lastError = 'audio: ' + e.message; }
  };

  /* ---- the incident list ------------------------------------------------------------------- */
  GP.renderIncidents = function () {
    var status = byId('gp-f-status').value, hours = Number(byId('gp-f-age').value);
    var area = (byId('gp-f-area').value || '').trim().toLowerCase();
    var rows = Object.keys(GP.incidentRows).map(function (id) { return GP.incidentRows[id]; });
    var windowed = rows.filter(function (r) {
      var age = (now() - new Date(r.created_at).getTime() / 1000) / 3600;
      return (!hours || age <= hours) && (!area || [r.village_code, r.grid_code, r.area_code,
        r.village_name].some(function (s) { return s && String(s).toLowerCase().indexOf(area) === 0 ||
        (s === r.village_name && s && s.toLowerCase().indexOf(area) >= 0); }));
    });
    var counts = {};
    windowed.forEach(function (r) { counts[r.status] = (counts[r.status] || 0) + 1; });
    byId('gp-counts').innerHTML = Object.keys(STATUS).filter(function (s) { return counts[s]; })
      .map(function (s) {
        return '<span class="gp-count gp-count-' + s + '">' + esc(STATUS[s]) + ' <b>' +
          counts[s] + '</b></span>';
      }).join(' · ') || '无警情 no incidents';
    var shown = windowed.filter(function (r) {
      return status === 'all' || (status === 'open' ? OPEN.indexOf(r.status) >= 0
        : r.status === status);
    }).sort(function (a, b) { return b.id - a.id; });
    byId('gp-incident-list').innerHTML = shown.slice(0, 200).map(function (r) {
      return '<div class="gp-incident-row gp-st-' + esc(r.status) +
        (r.id === GP.currentId ? ' gp-current' : '') + '" data-id="' + esc(r.id) +
        '" data-area="' + esc(r.area_code || '') + '"><b>#' + esc(r.id) + '</b> P' +
        esc(r.priority) + ' ' + esc(r.kind) + ' · <span class="gp-row-status">' +
        esc(STATUS[r.status] || r.status) + '</span><br><small>' +
        esc(r.village_name || r.village_code || '') + ' ' + esc(r.grid_code || '') + ' · ' +
        esc(ago(now() - new Date(r.created_at).getTime() / 1000)) + '</small>' + sourceBadge(r) +
        '</div>';
    }).join('') || '<div class="gp-note">无 none</div>';
  };

  /* ---- worker reports (网格员上报, issue 23): the source, the reporter, the photos ----------- */
  function sourceBadge(r) {
    if (r.source !== 'worker') { return ''; }
    return '<br><span class="gp-src-worker" title="网格员上报 reported by the grid worker">' +
      '网格员上报 worker report' + (r.reported_by_name ? ' · ' + esc(r.reported_by_name) : '') +
      '</span>' + (r.photos ? ' <span class="gp-photo-count">照片 ' + esc(r.photos) +
      ' photo(s)</span>' : '') + (r.outside_grid ? ' <span class="gp-outside">网格外 outside ' +
      'the worker\'s grid</span>' : '');
  }

  /* the incident's photos as thumbnails, each a link to the full photo (same cookie) */
  GP.photosHtml = function (inc) {
    var n = Number(inc.photos) || 0;
    if (!n) { return ''; }
    var items = [];
    for (var i = 1; i <= n; i++) {
      var url = '/api/v1/incidents/' + encodeURIComponent(inc.id) + '/photos/' + i;
      items.push('<a class="gp-photo-link" href="' + esc(url) + '" target="_blank" rel="noopener">' +
        '<img class="gp-photo" src="' + esc(url) + '" alt="照片 photo ' + i + '" loading="lazy">' +
        '</a>');
    }
    return '<div class="gp-photos" data-count="' + n + '">' + items.join('') + '</div>';
  };

  function sourceLine(inc) {
    if (inc.source !== 'worker') { return ''; }
    return '<div class="gp-note gp-src-line">来源 source: <b class="gp-src-worker">网格员上报 ' +
      'grid worker report</b>' + (inc.reported_by_name ? ' · ' + esc(inc.reported_by_name) : '') +
      (inc.outside_grid ? ' · <span class="gp-outside">位置在其网格外 outside the worker\'s ' +
      'grid</span>' : '') + '</div>';
  }

  /* ---- one incident: details, timeline, candidates, actions --------------------------------- */
  function panel(html) {
    var el = byId('gp-panel');
    el.style.display = 'block';
    el.innerHTML = '<a class="gp-close" href="#">×</a>' + html;
    return el;
  }

  GP.closePanel = function () {
    byId('gp-panel').style.display = 'none';
    GP.currentId = null;
    if (GP.linkLayer) { GP.linkLayer.clearLayers(); }
    if (GP.routeLayer) { GP.routeLayer.clearLayers(); }
    GP.renderIncidents();
  };

  function detailText(e) {
    var d = e.detail || {}, parts = [];
    if (d.outcome) { parts.push('结果 outcome: ' + d.outcome); }
    if (d.reason) { parts.push('原因 reason: ' + d.reason); }
    if (d.note) { parts.push(d.note); }
    if (d.to) { parts.push('→ ' + (LEVELS[d.to] || d.to)); }
    if (d.distance_m !== undefined) { parts.push(Math.round(d.distance_m) + ' m'); }
    if (d.device_id && GP.vehicleRows[d.device_id]) {
      parts.push(GP.vehicleRows[d.device_id].plate || '');
    }
    return parts.join(' · ');
  }

  var ACTIONS = [
    ['accept', '代为接警 accept on behalf', ['dispatched']],
    ['arrive', '标记到达 mark arrived', ['dispatched', 'accepted']],
    ['clear', '处置完毕 clear', ['arrived']],
    ['cancel', '撤销 cancel', ['new', 'dispatched', 'accepted', 'arrived']],
    ['release', '收回改派 release', ['dispatched', 'accepted']],
    ['escalate', '升级 escalate', ['new', 'dispatched']]
  ];

  GP.openIncident = function (id, opts) {
    var options = opts || {};
    GP.currentId = id;
    GP.renderIncidents();
    return GP.api('/api/v1/incidents/' + encodeURIComponent(id)).then(function (inc) {
      if (GP.currentId !== id) { return; }
      GP.current = inc;
      var timeline = (inc.events || []).map(function (e) {
        return '<li class="gp-event gp-event-' + esc(e.kind) + '"><small>' + esc(time(e.at)) +
          '</small> ' + esc(EVENT_LABELS[e.kind] || e.kind) + ' <small>' + esc(e.actor || '') +
          ' ' + esc(detailText(e)) + '</small></li>';
      }).join('');
      var actions = ACTIONS.filter(function (a) { return a[2].indexOf(inc.status) >= 0; })
        .map(function (a) {
          return '<button class="gp-action gp-action-' + a[0] + '" data-action="' + a[0] +
            '">' + esc(a[1]) + '</button>';
        }).join(' ');
      var keep = options.keepCandidates && byId('gp-candidates') ?
        byId('gp-candidates').innerHTML : '';
      var said = options.keepCandidates && byId('gp-assign-result') ?
        byId('gp-assign-result').innerHTML : '';
      var el = panel(
        '<h3>警情 Incident #' + esc(inc.id) + '</h3><div id="gp-incident-status">' +
        esc(inc.kind) + ' · P' + esc(inc.priority) + ' · <b class="gp-status gp-st-' +
        esc(inc.status) + '">' + esc(STATUS[inc.status] || inc.status) + '</b> · 级别 level ' +
        esc(LEVELS[inc.escalation] || inc.escalation) + '</div>' +
        '<div class="gp-note">' + esc(inc.village_name || inc.village_code || '') + ' ' +
        esc(inc.grid_code || '') + (inc.outside_grids ? ' (网格外 outside grids)' : '') +
        (inc.reporter ? ' · 报警人 caller ' + esc(inc.reporter) : '') +
        (inc.plate || inc.responder ? ' · 出警 responder ' + esc(inc.plate || inc.responder)
          : '') + '</div>' +
        sourceLine(inc) +
        (inc.description ? '<div class="gp-note">' + esc(inc.description) + '</div>' : '') +
        GP.photosHtml(inc) +
        '<div class="gp-actions">' + actions + '</div><div id="gp-assign-result">' + said + '</div>' +
        '<div id="gp-candidates">' + keep + '</div>' +
        '<details open><summary>时间线 Timeline</summary><ol class="gp-timeline">' + timeline +
        '</ol></details>');
      Array.prototype.forEach.call(el.querySelectorAll('.gp-action'), function (button) {
        button.addEventListener('click', function () {
          GP.act(inc.id, button.getAttribute('data-action'));
        });
      });
      GP.drawRoute();
      var map = GP.map(), ll = GP.latLng(inc.lon, inc.lat);
      if (!options.keepCandidates && !map.getBounds().contains(ll)) { map.panTo(ll); }
      if (['new', 'dispatched', 'accepted'].indexOf(inc.status) >= 0 && !options.keepCandidates) {
        return GP.showCandidates({properties: inc, geometry: {type: 'Point',
          coordinates: GP.display(inc.lon, inc.lat)}});
      }
      if (['new', 'dispatched', 'accepted'].indexOf(inc.status) < 0) {
        byId('gp-candidates').innerHTML = '';
        if (GP.linkLayer) { GP.linkLayer.clearLayers(); }
      } else {
        bindAssign(el, inc.id);
      }
      return undefined;
    }).catch(function (err) {
      panel('<h3>警情 Incident #' + esc(id) + '</h3><div class="gp-error">' +
            esc(err.message) + '</div>');
    });
  };

  function bindAssign(el, incidentId) {
    Array.prototype.forEach.call(el.querySelectorAll('.gp-assign'), function (button) {
      button.addEventListener('click', function () {
        var payload = {};
        payload[button.getAttribute('data-key')] = Number(button.getAttribute('data-id'));
        GP.confirm('指派 assign ' + button.getAttribute('data-label') + ' → #' + incidentId + '?')
          .then(function () { return GP.assign(incidentId, payload); })
          .catch(function () { return undefined; });
      });
    });
    var widen = el.querySelector('.gp-widen');
    if (widen) {
      widen.addEventListener('click', function () { GP.act(incidentId, 'escalate'); });
    }
    var mode = el.querySelector('#gp-mode-value');
    if (mode) {
      mode.addEventListener('change', function (e) {
        GP.showCandidates({properties: GP.current, geometry: {type: 'Point',
          coordinates: GP.display(GP.current.lon, GP.current.lat)}}, e.target.value);
      });
    }
  }

  function minutes(seconds) {
    return seconds === null || seconds === undefined ? '–' : (seconds / 60).toFixed(1);
  }

  GP.showCandidates = function (feature, mode) {
    var p = feature.properties;
    var how = mode || 'straight';
    var box = byId('gp-candidates');
    if (!box) { return GP.openIncident(p.id); }
    box.innerHTML = '<div class="gp-note">正在计算候选 ranking responders…</div>';
    var url = '/api/v1/incidents/' + encodeURIComponent(p.id) + '/candidates?k=5&mode=' + how;
    return GP.api(url).then(function (body) {
      if (GP.currentId !== p.id) { return; }
      GP.renderCandidates(feature, body, how);
    }).catch(function (err) {
      box.innerHTML = '<div class="gp-error">' + esc(err.message) + '</div>';
    });
  };

  GP.renderCandidates = function (feature, body, how) {
    var p = feature.properties;
    var rows = (body.candidates || []).map(function (c, i) {
      var called = c.kind === 'vehicle' ? (c.plate || c.name) : c.name;
      var who = c.kind === 'vehicle' ? '车 ' + esc(called) : '网格员 ' + esc(called);
      var key = c.kind === 'vehicle' ? 'device_id' : 'staff_id';
      return '<tr class="gp-candidate"><td>' + (i + 1) + '</td><td>' + who + '<br><small>' +
        esc(c.grid_code || '') + '</small></td><td>' + (c.distance_m / 1000).toFixed(1) +
        ' km</td><td>' + minutes(c.eta_s) + ' min</td><td>' + esc(ago(c.age_s)) +
        '</td><td><button class="gp-assign" data-key="' + key + '" data-id="' + esc(c[key]) +
        '" data-label="' + esc(called) + '"' + (p.status === 'new' ? '' : ' disabled') +
        '>指派 Assign</button></td></tr>';
    }).join('');
    var excluded = (body.excluded || []).map(function (x) {
      return '<li class="gp-excluded" data-reason="' + esc(x.reason) + '">' +
        esc(x.name || x.identifier) + (x.distance_m !== null && x.distance_m !== undefined ?
        ' ' + (x.distance_m / 1000).toFixed(1) + ' km' : '') + ': <b>' +
        esc(REASONS[x.reason] || x.reason) + '</b></li>';
    }).join('');
    var out = body.left_out || {};
    var summary = '';
    if (out.outside_level) {
      summary += '<li class="gp-excluded" data-reason="outside_level"><b>' + out.outside_level +
        '</b> 辆空闲车辆超出本级(' + esc(LEVELS[out.level] || out.level) + ')范围 free vehicles ' +
        'beyond the level\'s radius</li>';
    }
    if (out.outside_scope) {
      summary += '<li class="gp-excluded" data-reason="outside_scope"><b>' + out.outside_scope +
        '</b> 辆在管辖范围外 outside your scope</li>';
    }
    var modes = ['straight', 'road'].map(function (m) {
      return '<option value="' + m + '"' + (m === how ? ' selected' : '') + '>' +
        (m === 'road' ? '路网 road' : '直线 straight') + '</option>';
    }).join('');
    var box = byId('gp-candidates');
    box.innerHTML =
      '<div>候选 Candidates · ETA: <select id="gp-mode-value">' + modes + '</select>' +
      (body.escalated && body.escalated.length ? ' <small>已自动升级 auto-escalated</small>' : '') +
      '</div>' +
      (rows ? '<table class="gp-table"><tr><th>#</th><th>候选 Responder</th><th>距离 km</th>' +
              '<th>ETA</th><th>定位 fix</th><th></th></tr>' + rows + '</table>'
            : '<div class="gp-note">无可用候选 no candidate available</div>') +
      (body.note ? '<div class="gp-note">' + esc(body.note) + '</div>' : '') +
      ((excluded || summary) ? '<details class="gp-left-out" open><summary>未入选原因 why the ' +
        'others were left out</summary><ul>' + excluded + summary + '</ul>' +
        (['new', 'dispatched'].indexOf(p.status) >= 0 && body.escalation !== 'county' ?
         '<button class="gp-widen">扩大搜索(升级) escalate: widen the search</button>' : '') +
        '</details>' : '');
    bindAssign(byId('gp-panel'), p.id);
    GP.drawLinks(feature, body.candidates || []);
  };

  GP.drawLinks = function (feature, candidates) {
    var map = GP.map();
    if (!GP.linkLayer) { GP.linkLayer = L.layerGroup().addTo(map); }
    GP.linkLayer.clearLayers();
    var c0 = feature.geometry.coordinates;  // already in display coordinates
    candidates.forEach(function (c, i) {
      L.polyline([L.latLng(c0[1], c0[0]), GP.latLng(c.lon, c.lat)], {
        color: i === 0 ? '#2166ac' : '#6baed6', weight: i === 0 ? 3 : 1.5, dashArray: '6 4',
        interactive: false
      }).addTo(GP.linkLayer);
    });
  };

  /* The assigned vehicle's way to the incident, with distance and ETA (scaled from the
     dispatch's ETA by the distance left). */
  GP.drawRoute = function () {
    var map = GP.map(), inc = GP.current;
    if (!GP.routeLayer) { GP.routeLayer = L.layerGroup().addTo(map); }
    GP.routeLayer.clearLayers();
    if (!inc || !inc.device_id || ['dispatched', 'accepted'].indexOf(inc.status) < 0) { return; }
    var v = GP.vehicleRows[inc.device_id];
    if (!v) { return; }
    var open = (inc.dispatches || []).filter(function (d) { return !d.ended_at; })[0] || {};
    var km = haversineKm(v.lon, v.lat, inc.lon, inc.lat);
    var eta = open.eta_s && open.distance_m ? open.eta_s * km * 1000 / open.distance_m : null;
    var text = label(v) + ' → #' + inc.id + ': ' + km.toFixed(1) + ' km · ETA ' +
      minutes(eta) + ' min';
    if (GP.linkLayer) { GP.linkLayer.clearLayers(); }
    L.polyline([GP.latLng(v.lon, v.lat), GP.latLng(inc.lon, inc.lat)], {
      color: '#d55e00', weight: 4, dashArray: '10 6', className: 'gp-route'
    }).bindTooltip(text, {permanent: true, direction: 'center', className: 'gp-route-label'})
      .addTo(GP.routeLayer);
    GP.state.route = text;
  };

  function haversineKm(lon1, lat1, lon2, lat2) {
    var r = Math.PI / 180, dlat = (lat2 - lat1) * r, dlon = (lon2 - lon1) * r;
    var a = Math.sin(dlat / 2) * Math.sin(dlat / 2) + Math.cos(lat1 * r) * Math.cos(lat2 * r) *
      Math.sin(dlon / 2) * Math.sin(dlon / 2);
    return 6371.0088 * 2 * Math.asin(Math.min(1, Math.sqrt(a)));
  }

  GP.assign = function (incidentId, payload) {
    var out = byId('gp-assign-result');
    out.innerHTML = '<div class="gp-note">指派中 assigning…</div>';
    return GP.api('/api/v1/incidents/' + encodeURIComponent(incidentId) + '/assign',
                  {method: 'POST', body: payload}).then(function (body) {
      var status = (body && body.status) || 'dispatched';
      var done = byId('gp-assign-result');
      if (done) { done.innerHTML = '<div class="gp-ok">指派成功 assigned · ' +
                                   esc(STATUS[status] || status) + '</div>'; }
      Array.prototype.forEach.call(document.querySelectorAll('#gp-panel .gp-assign'),
                                   function (button) { button.disabled = true; });
      var badge = document.querySelector('#gp-panel .gp-status');
      if (badge) { badge.textContent = STATUS[status] || status; }
    }).catch(function (err) {
      out.innerHTML = '<div class="gp-error">' + (err.status === 409 ? '冲突 conflict: ' : '') +
        esc(err.message) + '</div>';
    });
  };

  var ASK = {
    accept: ['代为接警? accept on behalf of the responder?', null],
    arrive: ['标记已到达? mark the responder arrived?', null],
    clear: ['处置完毕? clear the incident', '处置结果 outcome (必填 required)'],
    cancel: ['撤销警情? cancel the incident', '撤销原因 reason (必填 required)'],
    release: ['收回派警(改派)? take the assignment back?', null],
    escalate: ['升级, 扩大搜索范围? escalate: widen the search one level?', null]
  };

  /* One workflow step, confirmed first; the answer (and the stream) redraw the panel. */
  GP.act = function (incidentId, action) {
    var ask = ASK[action];
    return GP.confirm(ask[0] + ' #' + incidentId, ask[1] ? {input: ask[1], required: true}
                                                     : null).then(function (text) {
      var body = {};
      if (action === 'clear') { body.outcome = text; }
      if (action === 'cancel') { body.reason = text; }
      return GP.api('/api/v1/incidents/' + encodeURIComponent(incidentId) + '/' + action,
                    {method: 'POST', body: body});
    }).then(function () {
      GP.openIncident(incidentId, {keepCandidates: action !== 'escalate'});
    }).catch(function (err) {
      if (err && err.cancelled) { return; }
      var out = byId('gp-assign-result');
      if (out) { out.innerHTML = '<div class="gp-error">' + esc(err.message) + '</div>'; }
    });
  };

  /* A confirmation box (the page's CSP allows no inline handlers; window.confirm blocks the
     stream's handlers). Resolves with the typed text, rejects {cancelled: true}. */
  GP.confirm = function (question, opts) {
    var box = byId('gp-confirm');
    var input = opts && opts.input;
    box.innerHTML = '<div class="gp-confirm-q">' + esc(question) + '</div>' +
      (input ? '<input id="gp-confirm-text" maxlength="200" placeholder="' + esc(input) + '">'
             : '') +
      '<div class="gp-row"><button id="gp-confirm-yes">确认 Confirm</button> ' +
      '<button id="gp-confirm-no">取消 Back</button></div><div id="gp-confirm-error" ' +
      'class="gp-error"></div>';
    box.style.display = 'block';
    var field = byId('gp-confirm-text');
    if (field) { field.focus(); }
    return new Promise(function (resolve, reject) {
      byId('gp-confirm-yes').addEventListener('click', function () {
        var text = field ? field.value.trim() : '';
        if (opts && opts.required && !text) {
          byId('gp-confirm-error').textContent = '请填写 required: ' + input;
          return;
        }
        box.style.display = 'none';
        resolve(text);
      });
      byId('gp-confirm-no').addEventListener('click', function () {
        box.style.display = 'none';
        reject({cancelled: true});
      });
    });
  };

  /* ---- taking a call ------------------------------------------------------------------------ */
  GP.setPlace = function (place) {
    GP.place = place;
    var map = GP.map();
    if (!GP.placeLayer) { GP.placeLayer = L.layerGroup().addTo(map); }
    GP.placeLayer.clearLayers();
    L.circleMarker(GP.latLng(place.lon, place.lat), {radius: 11, color: '#000000', weight: 3,
      dashArray: '3 3', fill: false, className: 'gp-place-marker'}).addTo(GP.placeLayer);
    byId('gp-place').textContent = place.label + ' (' + place.lon.toFixed(5) + ', ' +
      place.lat.toFixed(5) + ' WGS-84)';
  };

  GP.pick = function (on) {
    GP.picking = on === undefined ? !GP.picking : on;
    byId('gp-pick').className = GP.picking ? 'gp-picking' : '';
    GP.map().getContainer().style.cursor = GP.picking ? 'crosshair' : '';
  };

  GP.findPlace = function (q) {
    var out = byId('gp-place-results');
    if (!q.trim()) { return Promise.resolve(); }
    out.innerHTML = '<div class="gp-note">查找中 searching…</div>';
    return GP.api('/api/v1/incidents/places?q=' + encodeURIComponent(q.trim())).then(function (b) {
      var names = {village: '嘎查村 village', grid: '网格 grid', alert_point: '报警点 alarm point'};
      GP.placeHits = b.places;
      out.innerHTML = b.places.map(function (p, i) {
        return '<button type="button" class="gp-place-hit" data-i="' + i + '">' +
          esc(names[p.kind] || p.kind) + ' ' + esc(p.name || '') + ' ' + esc(p.code || '') +
          '</button>';
      }).join(' ') || '<div class="gp-note">未找到 not found</div>';
    }).catch(function (err) { out.innerHTML = '<div class="gp-error">' + esc(err.message) +
                                              '</div>'; });
  };

  GP.typedPlace = function () {
    var lon = Number(byId('gp-lon').value), lat = Number(byId('gp-lat').value);
    var datum = byId('gp-datum').value;
    if (!isFinite(lon) || !isFinite(lat) || byId('gp-lon').value === '' ||
        byId('gp-lat').value === '' || lon < -180 || lon > 180 || lat < -90 || lat > 90) {
      byId('gp-intake-result').innerHTML = '<div class="gp-error">经纬度无效 invalid ' +
        'coordinates</div>';
      return;
    }
    var wgs = datum === 'gcj02' ? GP.gcj02ToWgs84(lon, lat) : [lon, lat];
    GP.setPlace({lon: wgs[0], lat: wgs[1], label: datum === 'gcj02' ? 'GCJ-02 → WGS-84'
                                                                       : 'WGS-84'});
    GP.map().setView(GP.latLng(wgs[0], wgs[1]), Math.max(GP.map().getZoom(), 12));
  };

  GP.createIncident = function (form) {
    var out = byId('gp-intake-result');
    if (!GP.place) {
      out.innerHTML = '<div class="gp-error">请先选定地点 choose the place first</div>';
      return Promise.resolve();
    }
    var caller = [form.caller.value.trim(), form.phone.value.trim()].filter(Boolean).join(' ');
    var body = {kind: form.kind.value.trim(), priority: Number(form.priority.value),
                description: form.description.value.trim() || null, reporter: caller || null};
    if (GP.place.alert_point_id) { body.alert_point_id = GP.place.alert_point_id; }
    else if (GP.place.grid_code) { body.grid_code = GP.place.grid_code; }
    else { body.lon = GP.place.lon; body.lat = GP.place.lat; }
    out.innerHTML = '<div class="gp-note">创建中 creating…</div>';
    return GP.api('/api/v1/incidents', {method: 'POST', body: body}).then(function (made) {
      out.innerHTML = '<div class="gp-ok">已创建 created #' + esc(made.id) + '</div>';
      form.reset();
      GP.place = null;
      if (GP.placeLayer) { GP.placeLayer.clearLayers(); }
      byId('gp-place').textContent = '地点未定 no place yet';
      GP.state.created = made.id;
      GP.openIncident(made.id);
    }).catch(function (err) {
      out.innerHTML = '<div class="gp-error">' + esc(err.message) + '</div>';
    });
  };

  /* ---- live updates -------------------------------------------------------------------------- */
  function live(on, text) {
    GP.state.live = on;
    var el = byId('gp-live');
    el.textContent = text;
    el.className = 'gp-live ' + (on ? 'gp-live-on' : 'gp-live-off');
  }

  /* ?live=poll: the snapshots again every GRIDPATROL_MAP_VEHICLE_REFRESH_S instead of the
     stream, for networks whose proxies hold Server-Sent Events back (and the benchmark's
     baseline: the page as it was before the stream). */
  GP.poll = function () {
    live(true, '轮询 polling ' + GP.cfg().refreshS + ' s');
    var first = GP.loadVehicles();
    GP.loadIncidents();
    GP.poller = setInterval(function () {
      GP.loadVehicles();
      GP.loadIncidents();
    }, GP.cfg().refreshS * 1000);
    return first;
  };

  /* Opens the live stream (or the polling); returns the first vehicle snapshot's promise. */
  GP.connect = function () {
    if (GP.cfg().transport === 'poll') { return GP.poll(); }
    if (GP.stream) { GP.stream.close(); }
    var stream = GP.stream = new EventSource(GP.cfg().streamUrl);
    // the first snapshot does not wait for the stream to open: asked at once, beside it
    var opening = GP.loadVehicles(), hellos = 0;
    stream.addEventListener('hello', function () {
      live(true, '实时 live');
      hellos += 1;
      if (hellos === 1) {
        // then what reported while the stream opened (overlapping: a fix's commit may lag
        // its receipt time), so nothing is missed
        opening.then(function () {
          return GP.vehiclesNow ? GP.loadVehicles(GP.vehiclesNow - OVERLAP_S) : GP.loadVehicles();
        });
      } else {
        GP.loadVehicles();  // a snapshot after every reconnection: nothing missed
      }
      GP.loadIncidents();
    });
    stream.addEventListener('incident', function (e) {
      GP.state.events += 1;
      var msg = JSON.parse(e.data);
      applyIncident(msg.incident, msg.events || []);
    });
    stream.addEventListener('vehicles', function (e) {
      GP.state.events += 1;
      var msg = JSON.parse(e.data);
      GP.skew = msg.now - Date.now() / 1000;
      applyVehicles(msg.vehicles);
    });
    stream.onerror = function () {
      live(false, '重连中 reconnecting');
      if (stream.readyState === 2) {  // refused (signed out, too many streams): retry later
        setTimeout(GP.connect, 10000);
      }
    };
    return opening;
  };

  /* ---- wiring (no inline handlers: the page's CSP forbids them) ------------------------------ */
  document.addEventListener('click', function (e) {
    var t = e.target;
    if (!t || !t.closest) { return; }
    if (t.classList.contains('gp-close')) { e.preventDefault(); GP.closePanel(); return; }
    var row = t.closest('.gp-incident-row');
    if (row) { GP.openIncident(Number(row.getAttribute('data-id'))); return; }
    if (t.id === 'gp-alert' && t.getAttribute('data-id')) {
      GP.openIncident(Number(t.getAttribute('data-id')));
      return;
    }
    if (t.classList.contains('gp-follow')) { GP.follow(Number(t.getAttribute('data-id'))); }
    if (t.classList.contains('gp-text')) { GP.sendText(Number(t.getAttribute('data-id'))); }
    if (t.id === 'gp-pick') { GP.pick(); }
    if (t.id === 'gp-place-search') { GP.findPlace(byId('gp-place-q').value); }
    if (t.id === 'gp-coords') { GP.typedPlace(); }
    if (t.classList.contains('gp-place-hit')) {
      var p = GP.placeHits[Number(t.getAttribute('data-i'))];
      GP.setPlace({lon: p.lon, lat: p.lat, label: t.textContent,
                   alert_point_id: p.kind === 'alert_point' ? p.id : null,
                   grid_code: p.kind === 'grid' ? p.code : null});
      GP.map().setView(GP.latLng(p.lon, p.lat), Math.max(GP.map().getZoom(), 12));
    }
  });
  document.addEventListener('submit', function (e) {
    var form = e.target;
    if (form && form.id === 'gp-search-form') { e.preventDefault(); GP.search(form.q.value); }
    if (form && form.id === 'gp-intake') { e.preventDefault(); GP.createIncident(form); }
  });
  document.addEventListener('input', function (e) {
    var id = e.target && e.target.id;
    if (id === 'gp-vehicle-q') { GP.renderVehicles(); }
    if (id === 'gp-f-area') { GP.renderIncidents(); }
  });
  document.addEventListener('change', function (e) {
    var id = e.target && e.target.id;
    if (id === 'gp-f-status' || id === 'gp-f-age') { GP.renderIncidents(); }
  });

  GP.startConsole = function (layerControl) {
    var map = GP.map();
    GP.alertLayer = L.layerGroup().addTo(map);
    layerControl.addOverlay(GP.alertLayer, '报警电话 Alarm phones');
    map.on('moveend zoomend', function () { GP.drawLabels(); GP.drawAlertPoints(); });
    map.on('overlayadd', function (e) { if (e.layer === GP.alertLayer) { GP.drawAlertPoints(); } });
    map.on('click', function (e) {
      if (!GP.picking) { GP.gridAt(e.latlng); return; }
      var ll = e.latlng, wgs = GP.gcj() ? GP.gcj02ToWgs84(ll.lng, ll.lat) : [ll.lng, ll.lat];
      GP.setPlace({lon: wgs[0], lat: wgs[1], label: '地图点选 picked on the map'});
      GP.pick(false);
    });
    // ages and freshness move with the clock (no request: the stream brings the data)
    setInterval(function () {
      GP.renderIncidents();
      GP.renderVehicles();
    }, 30000);
    // the fleet first: the alarm phones' thousands of rows after its first snapshot is drawn
    GP.connect().then(GP.loadAlertPoints, GP.loadAlertPoints);
  };

  /* ---- a grid's popup: its worker (一格一员) and the worker's last check-in (巡查打卡) --------- */
  GP.GRID_POPUP_ZOOM = 11;  // grid outlines show from a county's view in; a click asks from here

  GP.consoleGridPopup = function (g) {
    var rows = [
      ['网格 Grid', g.code + (g.name ? ' ' + g.name : '')],
      ['村 Village', (g.village_name || '') + ' ' + (g.village_code || '')],
      ['网格员 Worker', g.worker === undefined ? '…' :
        (g.worker ? g.worker + ' ' + (g.worker_phone || '') : '未配备 none assigned')],
      ['网格员最近打卡 Worker\'s last check-in', g.last_checkin_at === undefined ? '…' :
        (g.last_checkin_at ? GP.chinaTime(g.last_checkin_at) : '无 none')],
      ['报警点 Alarm points', g.alert_points === undefined ? '…' : g.alert_points.length]
    ];
    return '<table class="gp-table gp-grid-popup">' + rows.map(function (r) {
      return '<tr><th>' + r[0] + '</th><td>' + esc(r[1]) + '</td></tr>';
    }).join('') + '</table>';
  };

  /* a click on the map (not picking a place): the grid there, if the user may see one */
  GP.gridAt = function (latlng) {
    var map = GP.map();
    if (map.getZoom() < GP.GRID_POPUP_ZOOM) { return Promise.resolve(null); }
    var p = GP.gcj() ? GP.gcj02ToWgs84(latlng.lng, latlng.lat) : [latlng.lng, latlng.lat];
    var d = 0.000005;
    var bbox = [p[0] - d, p[1] - d, p[0] + d, p[1] + d].map(function (v) {
      return v.toFixed(6);
    }).join(',');
    return GP.api('/collections/grids/items?limit=1&bbox=' + bbox).then(function (fc) {
      var f = fc && fc.features && fc.features[0];
      if (!f) { return null; }
      var code = f.properties.code;
      var popup = L.popup({maxWidth: 380}).setLatLng(latlng)
        .setContent(GP.consoleGridPopup({code: code, name: f.properties.name})).openOn(map);
      return GP.api('/api/v1/grids/' + encodeURIComponent(code)).then(function (g) {
        popup.setContent(GP.consoleGridPopup(g));
        GP.state.gridPopup = code;
        return g;
      });
    }).catch(function (err) { GP.state.lastError = err.message; return null; });
  };

  /* ---- search by grid code or plate ---------------------------------------------------------- */
  GP.search = function (text) {
    var q = (text || '').trim();
    var out = byId('gp-search-result');
    var map = GP.map();
    if (!q) { return Promise.resolve(); }
    if (!GP.searchLayer) { GP.searchLayer = L.featureGroup().addTo(map); }
    GP.searchLayer.clearLayers();
    var found = function (fc, label) {
      var layer = L.geoJSON(GP.displayGeoJSON(fc), {
        style: {color: '#00e5ff', weight: 4, fill: false},
        pointToLayer: function (f, ll) {
          return L.circleMarker(ll, {radius: 14, color: '#00e5ff', weight: 4, fill: false});
        }
      }).addTo(GP.searchLayer);
      map.fitBounds(layer.getBounds(), {maxZoom: 13});
      out.textContent = label;
    };
    if (/^\d{15}$/.test(q)) {
      return GP.api('/collections/grids/items/' + q).then(function (f) {
        found(f, '网格 grid ' + q);
      }).catch(function () { out.textContent = '未找到 not found: ' + q; });
    }
    var base = '/collections/vehicles/items?limit=5&';
    return GP.api(base + 'plate=' + encodeURIComponent(q)).then(function (fc) {
      return fc.features.length ? fc
        : GP.api(base + 'identifier=' + encodeURIComponent(q));
    }).then(function (fc) {
      if (!fc.features.length) { out.textContent = '未找到 not found: ' + q; return; }
      found(fc, '车辆 vehicle ' + (fc.features[0].properties.plate || q));
    }).catch(function (err) { out.textContent = err.message; });
  };
}());
