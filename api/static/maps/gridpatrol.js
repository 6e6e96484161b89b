/* GridPatrol map pages: GCJ-02 display conversion, API calls, and the colour grid map's grid
 * details.
 *
 * The dispatcher's own code is dispatch.js. Every page sets window.GP_CONFIG (map variable
 * name, basemap datum, endpoints). Data from the API is WGS-84; on a GCJ-02 basemap (AMap) it is converted here for display only, with the same
 * public formula as gis/crs.py. Nothing here talks to anything but this server.
 */
(function () {
  'use strict';

  var A = 6378245.0;
  var EE = 0.00669342162296594323;
  var PI = Math.PI;

  function inChina(lon, lat) {
    return lon >= 72.004 && lon <= 137.8347 && lat >= 0.8293 && lat <= 55.8271;
  }

  function delta(lon, lat) {
    var x = lon - 105.0, y = lat - 35.0, sx = Math.sqrt(Math.abs(x));
    var dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sx;
    dlat += (20.0 * Math.sin(6.0 * x * PI) + 20.0 * Math.sin(2.0 * x * PI)) * 2.0 / 3.0;
    dlat += (20.0 * Math.sin(y * PI) + 40.0 * Math.sin(y / 3.0 * PI)) * 2.0 / 3.0;
    dlat += (160.0 * Math.sin(y / 12.0 * PI) + 320.0 * Math.sin(y * PI / 30.0)) * 2.0 / 3.0;
    var dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sx;
    dlon += (20.0 * Math.sin(6.0 * x * PI) + 20.0 * Math.sin(2.0 * x * PI)) * 2.0 / 3.0;
    dlon += (20.0 * Math.sin(x * PI) + 40.0 * Math.sin(x / 3.0 * PI)) * 2.0 / 3.0;
    dlon += (150.0 * Math.sin(x / 12.0 * PI) + 300.0 * Math.sin(x / 30.0 * PI)) * 2.0 / 3.0;
    var rad = lat / 180.0 * PI;
    var magic = 1.0 - EE * Math.sin(rad) * Math.sin(rad);
    var sqrtMagic = Math.sqrt(magic);
    dlat = (dlat * 180.0) / ((A * (1.0 - EE)) / (magic * sqrtMagic) * PI);
    dlon = (dlon * 180.0) / (A / sqrtMagic * Math.cos(rad) * PI);
    return [dlon, dlat];
  }

  function wgs84ToGcj02(lon, lat) {
    if (!inChina(lon, lat)) { return [lon, lat]; }
    var d = delta(lon, lat);
    return [lon + d[0], lat + d[1]];
  }

  function gcj02ToWgs84(lon, lat) {
    var x = lon, y = lat;
    for (var i = 0; i < 30; i++) {
      var f = wgs84ToGcj02(x, y);
      var ex = f[0] - lon, ey = f[1] - lat;
      x -= ex; y -= ey;
      if (Math.abs(ex) < 1e-10 && Math.abs(ey) < 1e-10) { break; }
    }
    return [x, y];
  }

  function esc(value) {
    return String(value === null || value === undefined ? '' : value)
      .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
      .replace(/"/g, '&quot;');
  }

  // Leaflet 1.9 dropped DomEvent.fakeStop, which VectorGrid's canvas renderer still calls.
  if (window.L && L.DomEvent && !L.DomEvent.fakeStop) {
    L.DomEvent.fakeStop = function (e) { e._stopped = true; };
  }

  var GP = window.GP = {
    wgs84ToGcj02: wgs84ToGcj02,
    gcj02ToWgs84: gcj02ToWgs84,
    esc: esc,
    state: {vehicles: 0, incidents: 0, lastError: null},
    cfg: function () { return window.GP_CONFIG || {}; },
    map: function () { return window[GP.cfg().map]; },
    gcj: function () { return !!GP.cfg().gcj02; },
    display: function (lon, lat) { return GP.gcj() ? wgs84ToGcj02(lon, lat) : [lon, lat]; },
    latLng: function (lon, lat) { var p = GP.display(lon, lat); return L.latLng(p[1], p[0]); }
  };

  GP.displayCoords = function (coords) {
    if (typeof coords[0] === 'number') {
      var p = GP.display(coords[0], coords[1]);
      return [p[0], p[1]].concat(coords.slice(2));
    }
    return coords.map(GP.displayCoords);
  };

  /* A copy of a GeoJSON object in display coordinates (GCJ-02 on AMap). */
  GP.displayGeoJSON = function (obj) {
    if (!GP.gcj() || obj === null || typeof obj !== 'object') { return obj; }
    if (Array.isArray(obj)) { return obj.map(GP.displayGeoJSON); }
    var out = {};
    Object.keys(obj).forEach(function (key) {
      if (key === 'coordinates' && obj.type) {
        out[key] = GP.displayCoords(obj[key]);
      } else if (key === 'properties') {
        out[key] = obj[key];
      } else {
        out[key] = GP.displayGeoJSON(obj[key]);
      }
    });
    return out;
  };

  /* The map's view as a WGS-84 bbox query value, padded by a fifth. */
  GP.dataBbox = function (map) {
    var b = map.getBounds().pad(0.2);
    var sw = [b.getWest(), b.getSouth()], ne = [b.getEast(), b.getNorth()];
    if (GP.gcj()) { sw = gcj02ToWgs84(sw[0], sw[1]); ne = gcj02ToWgs84(ne[0], ne[1]); }
    var clamp = function (v, lo, hi) { return Math.max(lo, Math.min(hi, v)).toFixed(5); };
    return [clamp(sw[0], -180, 180), clamp(sw[1], -90, 90),
            clamp(ne[0], -180, 180), clamp(ne[1], -90, 90)].join(',');
  };

  /* fetch() against this server: JSON in and out, errors with detail. The page's HTTP-only
   * cookie authenticates (the page never sees the token); writes also carry the page's CSRF
   * token, without which the server does not accept the cookie for them. */
  GP.api = function (path, options) {
    var opts = options || {};
    var method = (opts.method || 'GET').toUpperCase();
    var headers = {'Accept': 'application/json'};
    if (method !== 'GET' && method !== 'HEAD' && GP.cfg().csrf) {
      headers['X-CSRF-Token'] = GP.cfg().csrf;
    }
    if (opts.body !== undefined) { headers['Content-Type'] = 'application/json'; }
    return fetch(path, {
      method: method,
      headers: headers,
      credentials: 'same-origin',
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined
    }).then(function (response) {
      return response.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = {detail: text}; }
        if (!response.ok) {
          var err = new Error((body && body.detail) || response.statusText);
          err.status = response.status;
          err.body = body;
          throw err;
        }
        return body;
      });
    });
  };

  /* ---- colour grid map ------------------------------------------------------------------ */
  GP.coverageColour = function (pct) {
    var classes = GP.cfg().coverageClasses || [];
    var colour = classes.length ? classes[0][1] : '#a50026';
    classes.forEach(function (c) { if (pct >= c[0]) { colour = c[1]; } });
    return colour;
  };

  /* a grid outside the page's area (?area=) is drawn but not coloured: the view is the area */
  GP.inArea = function (code) {
    var area = GP.cfg().area || '';
    return !area || String(code).indexOf(area) === 0;
  };

  GP.coverageStyle = function (p) {
    if (!GP.inArea(p.code)) {
      return {fill: false, color: '#888888', weight: 0.4, opacity: 0.5};
    }
    return {fill: true, fillColor: GP.coverageColour(p.coverage_pct || 0), fillOpacity: 0.7,
            color: '#444444', weight: 0.6, opacity: 0.8};
  };

  /* the unit of the page's level an admin-area tile feature (12-digit code) stands for */
  GP.unitOf = function (p) {
    var code = String(p.code).substring(0, GP.cfg().digits || 12);
    return {code: code, figures: (GP.cfg().units || {})[code] || null};
  };

  GP.unitStyle = function (p) {
    var unit = GP.unitOf(p);
    if (!unit.figures) { return {fill: false, color: '#888888', weight: 0.5, opacity: 0.5}; }
    return {fill: true, fillColor: GP.coverageColour(unit.figures.coverage_pct || 0),
            fillOpacity: 0.7, color: '#444444', weight: 1, opacity: 0.9};
  };

  GP.unitPopup = function (code, level, u) {
    var labels = GP.cfg().levelLabels || {};
    var rows = [[labels[level] || level, (u && u.name_zh ? u.name_zh + ' ' : '') + code]];
    if (!u) {
      rows.push(['覆盖率 Coverage', '本方案无此区网格 no grids of this layout here']);
    } else {
      rows = rows.concat([
        ['覆盖率 Coverage', (u.coverage_pct === null ? '–' : u.coverage_pct) + ' %'],
        ['网格 Grids', u.grids], ['盲区 Blind cells', u.blind_cells + ' / ' + u.cells],
        ['巡逻次数 Visits', u.visits], ['里程 km', u.patrol_km], ['停留 Hours', u.dwell_h],
        ['车辆 Vehicles', u.vehicles]
      ]);
    }
    return '<table class="gp-table">' + rows.map(function (r) {
      return '<tr><th>' + r[0] + '</th><td>' + esc(r[1]) + '</td></tr>';
    }).join('') + '</table>';
  };

  GP.onUnitClick = function (e) {
    var unit = GP.unitOf(e.layer.properties);
    L.popup({maxWidth: 420}).setLatLng(e.latlng)
      .setContent(GP.unitPopup(unit.code, GP.cfg().level, unit.figures)).openOn(GP.map());
  };

  /* a stored time (ISO, UTC) as China-local 'YYYY-MM-DD HH:MM:SS' — the reports' convention */
  GP.chinaTime = function (iso) {
    var t = iso ? Date.parse(iso) : NaN;
    if (isNaN(t)) return iso || '–';
    return new Date(t + 8 * 3600 * 1000).toISOString().replace('T', ' ').substring(0, 19) + ' (UTC+8)';
  };

  GP.gridPopup = function (p) {
    var rows = [
      ['网格 Grid', p.code + (p.name ? ' ' + p.name : '')], ['村 Village', (p.village_name || '') + ' ' + p.village_code],
      ['覆盖率 Coverage', p.coverage_pct + ' %'], ['巡逻次数 Visits', p.visits],
      ['盲区 Blind cells', p.blind_cells + ' / ' + p.cells], ['里程 km', p.patrol_km],
      ['停留 Hours', p.dwell_h], ['最近巡逻 Last patrol', GP.chinaTime(p.last_patrol)],
      ['网格员 Worker', p.worker === undefined ? '…' :
        (p.worker ? p.worker + ' ' + (p.worker_phone || '') : '未配备 none assigned')],
      ['网格员最近打卡 Worker\'s last check-in', p.last_checkin_at === undefined ? '…' :
        (p.last_checkin_at ? GP.chinaTime(p.last_checkin_at) : '无 none')]
    ];
    return '<table class="gp-table">' + rows.map(function (r) {
      return '<tr><th>' + r[0] + '</th><td>' + esc(r[1]) + '</td></tr>';
    }).join('') + '</table>';
  };

  GP.onGridClick = function (e) {
    if (!GP.inArea(e.layer.properties.code)) { return null; }
    return GP.openGrid(e.layer.properties, e.latlng);
  };

  /* a grid's popup at latlng: its figures, then its worker and blind spots from the API */
  GP.openGrid = function (p, latlng) {
    var map = GP.map();
    var cfg = GP.cfg();
    var popup = L.popup({maxWidth: 420}).setLatLng(latlng).setContent(GP.gridPopup(p))
      .openOn(map);
    /* the grid worker (一格一员) from the scoped grid API: never in the tiles, which may be
       served to anonymous readers (GRIDPATROL_API_PUBLIC_TILES) */
    var worker = GP.api('/api/v1/grids/' + encodeURIComponent(p.code) + '?layout=' + cfg.layout)
      .then(function (g) {
        p.worker = g.worker || null;
        p.worker_phone = g.worker_phone || '';
        p.last_checkin_at = g.last_checkin_at || null;  // the worker's latest foot patrol
        popup.setContent(GP.gridPopup(p));
      }).catch(function (err) { GP.state.lastError = err.message; });
    if (!GP.blindLayer) { GP.blindLayer = L.featureGroup().addTo(map); }
    GP.blindLayer.clearLayers();
    if (!p.blind_cells) { return worker; }
    var url = '/api/v1/coverage/blind-spots?grid=' + p.code + '&layout=' + cfg.layout +
      '&end=' + cfg.to + '&days=' + cfg.blindDays;
    var blind = cfg.blindStyle || {colour: '#2d004b', fillOpacity: 0.45};
    return GP.api(url).then(function (fc) {
      L.geoJSON(GP.displayGeoJSON(fc), {
        style: {color: blind.colour, weight: 1, fillColor: blind.colour,
                fillOpacity: blind.fillOpacity, className: 'gp-blind'},
        interactive: false
      }).addTo(GP.blindLayer);
    }).catch(function (err) { GP.state.lastError = err.message; });
  };

  /* ---- colour grid map: search by code or name ------------------------------------------ */
  GP.showHit = function (hit) {
    var map = GP.map();
    var b = hit.bbox;
    var bounds = L.latLngBounds(GP.latLng(b[0], b[1]), GP.latLng(b[2], b[3]));
    /* the boxes (summary left, controls top right) stay clear of the hit and its popup */
    map.fitBounds(bounds, {maxZoom: 15, paddingTopLeft: [560, 380], paddingBottomRight: [300, 20]});
    var centre = bounds.getCenter();
    GP.state.found = hit.code;
    var f = hit.figures;
    if (hit.level === 'grid') {
      return GP.openGrid({
        code: hit.code, name: hit.grid_name, village_code: hit.code.substring(0, 12),
        village_name: hit.village_name,
        coverage_pct: f ? f.coverage_pct : '–', visits: f ? f.visits : '–',
        blind_cells: f ? f.blind_cells : 0, cells: f ? f.cells : '–',
        patrol_km: f ? f.patrol_km : '–', dwell_h: f ? f.dwell_h : '–',
        last_patrol: f && f.last_patrol ? String(f.last_patrol).replace(/\.\d+/, '') : null
      }, centre);
    }
    L.popup({maxWidth: 420}).setLatLng(centre)
      .setContent(GP.unitPopup(hit.code, hit.level, f)).openOn(map);
    return null;
  };

  GP.find = function (q) {
    var cfg = GP.cfg();
    var msg = document.getElementById('gp-find-msg');
    var list = document.getElementById('gp-find-hits');
    list.innerHTML = '';
    msg.className = 'gp-small';
    msg.textContent = '查找中 searching…';
    var url = '/maps/coverage/search?q=' + encodeURIComponent(q) + '&layout=' + cfg.layout +
      '&from=' + cfg.from + '&to=' + cfg.to + (cfg.area ? '&area=' + cfg.area : '');
    return GP.api(url).then(function (body) {
      GP.state.hits = body.hits.length;
      if (!body.hits.length) {
        msg.className = 'gp-error';
        msg.textContent = '未找到 no match: ' + q;
        return;
      }
      var labels = cfg.levelLabels || {};
      msg.textContent = body.hits.length + ' 个结果 found';
      body.hits.forEach(function (hit) {
        var item = document.createElement('li');
        var link = document.createElement('a');
        link.href = '#';
        link.className = 'gp-found';
        link.setAttribute('data-code', hit.code);
        link.textContent = (labels[hit.level] || hit.level) + ' ' +
          (hit.level === 'grid' ? (hit.grid_name || hit.village_name || '') : (hit.name || '')) +
          ' ' + hit.code;
        link.addEventListener('click', function (ev) { ev.preventDefault(); GP.showHit(hit); });
        item.appendChild(link);
        list.appendChild(item);
      });
      GP.showHit(body.hits[0]);
    }).catch(function (err) {
      GP.state.lastError = err.message;
      msg.className = 'gp-error';
      msg.textContent = '查找失败 search failed: ' + err.message;
    });
  };

  /* the page's controls: a changed level or layout reopens the page; the search box */
  GP.startCoverage = function (layer) {
    GP.coverageLayer = layer;
    var form = document.getElementById('gp-view-form');
    if (form) {
      var clean = function () {  /* no empty area= in the address */
        var area = form.querySelector('input[name=area]');
        if (area && !area.value.trim()) { area.disabled = true; }
      };
      form.addEventListener('submit', clean);
      form.querySelectorAll('select').forEach(function (select) {
        select.addEventListener('change', function () { clean(); form.submit(); });
      });
    }
    var find = document.getElementById('gp-find');
    if (find) {
      find.addEventListener('submit', function (ev) {
        ev.preventDefault();
        var q = find.querySelector('input[name=q]').value.trim();
        if (q) { GP.find(q); }
      });
    }
  };
}());
