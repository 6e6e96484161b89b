/* GridPatrol dispatcher map: live vehicles and incidents (Leaflet Realtime), the ranked
 * candidates panel with its assign buttons, and search by grid code or plate.
 * Needs gridpatrol.js (GP, GCJ-02 display conversion, API calls) loaded first.
 */
(function () {
  'use strict';

  var GP = window.GP;
  var esc = GP.esc;

  /* Count what a Realtime layer shows after each applied update (a response overtaken by a
     newer request is dropped by the plugin, so counting responses would run ahead). */
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

  /* ---- live vehicles ------------------------------------------------------------------- */
  var STATUS_COLOURS = {available: '#1a9850', busy: '#d7301f', off_duty: '#4a6fa5'};
  var STATUS_LABELS = {available: '空闲 available', busy: '出警 busy', off_duty: '休班 off duty'};
  var FRESH_LABELS = {live: '在线 live', stale: '延迟 stale', offline: '离线 offline'};

  GP.vehicleColour = function (p) {
    if (p.freshness === 'offline') { return '#9e9e9e'; }
    if (p.freshness === 'stale') { return '#f0b429'; }
    return STATUS_COLOURS[p.status] || STATUS_COLOURS.available;
  };

  GP.vehicleLabel = function (p) {
    var age = p.age_s < 120 ? p.age_s + ' s' : Math.round(p.age_s / 60) + ' min';
    return '<b>' + esc(p.plate || p.identifier) + '</b> ' + esc(p.name || '') + '<br>' +
      esc(STATUS_LABELS[p.status] || p.status) + ' · ' + esc(FRESH_LABELS[p.freshness]) +
      ' · ' + esc(age);
  };

  GP.vehicleSource = function () {
    return function (success, error) {
      var map = GP.map();
      GP.api(GP.cfg().vehiclesUrl + '&bbox=' + GP.dataBbox(map)).then(function (fc) {
        success(GP.displayGeoJSON(fc));
      }).catch(function (err) { GP.state.lastError = err.message; error(err, err.message); });
    };
  };

  GP.vehicleMarker = function (feature, latlng) {
    var p = feature.properties;
    return L.circleMarker(latlng, {
      radius: 6, weight: 1.5, color: '#ffffff', fillColor: GP.vehicleColour(p),
      fillOpacity: 0.95, className: 'gp-vehicle'
    }).bindTooltip(GP.vehicleLabel(p));
  };

  GP.vehicleUpdate = function (feature, oldLayer) {
    if (!oldLayer) { return undefined; }
    var c = feature.geometry.coordinates;
    oldLayer.setLatLng(L.latLng(c[1], c[0]));
    restyle(oldLayer, {fillColor: GP.vehicleColour(feature.properties)});
    oldLayer.setTooltipContent(GP.vehicleLabel(feature.properties));
    return oldLayer;
  };

  /* ---- incidents and the dispatch panel ------------------------------------------------ */
  var INCIDENT_COLOURS = {new: '#b10026', dispatched: '#2166ac', accepted: '#5e3c99',
                          arrived: '#1b7837'};

  GP.incidentSource = function () {
    return function (success, error) {
      GP.api(GP.cfg().incidentsUrl).then(function (fc) {
        success(GP.displayGeoJSON(fc));
      }).catch(function (err) { GP.state.lastError = err.message; error(err, err.message); });
    };
  };

  GP.incidentMarker = function (feature, latlng) {
    var p = feature.properties;
    return L.circleMarker(latlng, {
      radius: 9 + Math.max(0, 5 - (p.priority || 3)), weight: 3, color: '#ffffff',
      fillColor: INCIDENT_COLOURS[p.status] || '#b10026', fillOpacity: 1,
      className: 'gp-incident gp-incident-' + p.id
    }).bindTooltip('警情 #' + esc(p.id) + ' ' + esc(p.kind) + ' · P' + esc(p.priority) +
                   ' · ' + esc(p.status));
  };

  GP.incidentUpdate = function (feature, oldLayer) {
    if (!oldLayer) { return undefined; }
    var p = feature.properties;
    restyle(oldLayer, {fillColor: INCIDENT_COLOURS[p.status] || '#b10026'});
    oldLayer.setTooltipContent('警情 #' + esc(p.id) + ' ' + esc(p.kind) + ' · P' +
                               esc(p.priority) + ' · ' + esc(p.status));
    return oldLayer;
  };

  GP.onIncident = function (feature, layer) {
    layer.on('click', function () { GP.showCandidates(feature); });
  };

  function panel(html) {
    var el = document.getElementById('gp-panel');
    el.style.display = 'block';
    el.innerHTML = '<a class="gp-close" href="#">×</a>' + html;
    return el;
  }

  /* No inline handlers (the page's Content-Security-Policy forbids them): delegated here. */
  document.addEventListener('click', function (e) {
    var target = e.target;
    if (target && target.classList && target.classList.contains('gp-close')) {
      e.preventDefault();
      GP.closePanel();
    }
  });
  document.addEventListener('submit', function (e) {
    var form = e.target;
    if (form && form.id === 'gp-search-form') {
      e.preventDefault();
      GP.search(form.q.value);
    }
  });

  GP.closePanel = function () {
    document.getElementById('gp-panel').style.display = 'none';
    if (GP.linkLayer) { GP.linkLayer.clearLayers(); }
  };

  function minutes(seconds) {
    return seconds === null || seconds === undefined ? '–' : (seconds / 60).toFixed(1);
  }

  GP.showCandidates = function (feature, mode) {
    var p = feature.properties;
    var how = mode || document.getElementById('gp-mode-value') &&
      document.getElementById('gp-mode-value').value || 'straight';
    GP.current = feature;
    panel('<h3>警情 Incident #' + esc(p.id) + '</h3><div id="gp-incident-status">' +
          esc(p.kind) + ' · P' + esc(p.priority) + ' · <b class="gp-status">' +
          esc(p.status) + '</b></div><div class="gp-note">正在计算候选 ranking responders…</div>');
    var url = '/api/v1/incidents/' + encodeURIComponent(p.id) + '/candidates?k=5&mode=' + how;
    return GP.api(url).then(function (body) {
      GP.renderCandidates(feature, body, how);
    }).catch(function (err) {
      panel('<h3>警情 Incident #' + esc(p.id) + '</h3><div class="gp-error">' +
            esc(err.message) + '</div>');
    });
  };

  GP.renderCandidates = function (feature, body, how) {
    var p = feature.properties;
    var rows = (body.candidates || []).map(function (c, i) {
      var who = c.kind === 'vehicle' ? '车 ' + esc(c.plate || c.name) : '员 ' + esc(c.name);
      var key = c.kind === 'vehicle' ? 'device_id' : 'staff_id';
      var id = c[key];
      return '<tr class="gp-candidate"><td>' + (i + 1) + '</td><td>' + who + '<br><small>' +
        esc(c.grid_code || '') + '</small></td><td>' + (c.distance_m / 1000).toFixed(1) +
        ' km</td><td>' + minutes(c.eta_s) + ' min</td><td><button class="gp-assign" ' +
        'data-key="' + key + '" data-id="' + esc(id) + '">指派 Assign</button></td></tr>';
    }).join('');
    var excluded = (body.excluded || []).map(function (x) {
      return '<li>' + esc(x.identifier) + ': ' + esc(x.reason) + '</li>';
    }).join('');
    var modes = ['straight', 'road'].map(function (m) {
      return '<option value="' + m + '"' + (m === how ? ' selected' : '') + '>' +
        (m === 'road' ? '路网 road' : '直线 straight') + '</option>';
    }).join('');
    var el = panel(
      '<h3>警情 Incident #' + esc(p.id) + '</h3>' +
      '<div id="gp-incident-status">' + esc(p.kind) + ' · P' + esc(p.priority) +
      ' · <b class="gp-status">' + esc(p.status) + '</b> · 升级 level ' +
      esc(body.escalation_level) + '</div>' +
      '<div>ETA: <select id="gp-mode-value">' + modes + '</select></div>' +
      (rows ? '<table class="gp-table"><tr><th>#</th><th>候选 Responder</th><th>距离</th>' +
              '<th>ETA</th><th></th></tr>' + rows + '</table>'
            : '<div class="gp-note">无可用候选 no candidate available</div>') +
      (excluded ? '<details><summary>排除 excluded</summary><ul>' + excluded +
                  '</ul></details>' : '') +
      '<div id="gp-assign-result"></div>');
    el.querySelector('#gp-mode-value').addEventListener('change', function (e) {
      GP.showCandidates(feature, e.target.value);
    });
    Array.prototype.forEach.call(el.querySelectorAll('.gp-assign'), function (button) {
      button.addEventListener('click', function () {
        var payload = {};
        payload[button.getAttribute('data-key')] = Number(button.getAttribute('data-id'));
        GP.assign(p.id, payload);
      });
    });
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

  GP.assign = function (incidentId, payload) {
    var out = document.getElementById('gp-assign-result');
    out.innerHTML = '<div class="gp-note">指派中 assigning…</div>';
    return GP.api('/api/v1/incidents/' + encodeURIComponent(incidentId) + '/assign',
                  {method: 'POST', body: payload}).then(function (body) {
      var props = (body && body.properties) || body || {};
      var status = props.status || 'dispatched';
      out.innerHTML = '<div class="gp-ok">已派警 ' + esc(status) + '</div>';
      Array.prototype.forEach.call(document.querySelectorAll('#gp-panel .gp-assign'),
                                   function (button) { button.disabled = true; });
      var badge = document.querySelector('#gp-panel .gp-status');
      if (badge) { badge.textContent = status; }
      if (GP.incidents) { GP.incidents.update(); }
      if (GP.vehicles) { GP.vehicles.update(); }
    }).catch(function (err) {
      out.innerHTML = '<div class="gp-error">' + (err.status === 409 ? '冲突 conflict: ' : '') +
        esc(err.message) + '</div>';
    });
  };

  /* ---- search by grid code or plate ----------------------------------------------------- */
  GP.search = function (text) {
    var q = (text || '').trim();
    var out = document.getElementById('gp-search-result');
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
