/* GridPatrol planner page (网格规划调整): a draft layout's grids with their codes, selection,
 * drawn edits (split along a line, reshape to an outline, merge two selected grids) sent to the
 * redraw API with the draft's version, validation problems, the diff against the layout the
 * draft was cloned from, and activation. A stale version (409) is shown and the draft reloaded.
 *
 * GP.planner.split(code, coords), .reshape(code, ring), .merge(codes), .validate(),
 * .activate() are what the buttons and Leaflet.draw call; coordinates are WGS-84 [lon, lat].
 * Needs gridpatrol.js (GP, GCJ-02 display conversion, API calls) loaded first.
 */
(function () {
  'use strict';

  var GP = window.GP;
  var esc = GP.esc;
  var P = GP.planner = {
    state: {loaded: false, version: null, status: null, grids: 0, violations: 0,
            diff: null, selected: [], message: '', busy: false, edits: 0}
  };

  function cfg() { return GP.cfg(); }
  function byId(id) { return document.getElementById(id); }
  function base() { return '/api/v1/layouts/' + encodeURIComponent(cfg().layout); }

  function message(text, kind) {
    P.state.message = text;
    var el = byId('gp-message');
    if (el) { el.className = kind === 'error' ? 'gp-error' : (kind === 'ok' ? 'gp-ok' : 'gp-note'); el.textContent = text; }
  }

  /* Drawn coordinates (display datum) back to WGS-84 for the API. */
  function toWgs84(latlngs) {
    return latlngs.map(function (ll) {
      return GP.gcj() ? GP.gcj02ToWgs84(ll.lng, ll.lat) : [ll.lng, ll.lat];
    });
  }

  /* ---- layers ----------------------------------------------------------------------------- */
  var GRID_STYLE = {color: '#3b3b3b', weight: 1.2, fillColor: '#ffffff', fillOpacity: 0.15};
  var SELECTED_STYLE = {color: '#2166ac', weight: 4, fillColor: '#2166ac', fillOpacity: 0.25};

  function setSelected(codes) {
    P.state.selected = codes.slice(-2);
    if (P.gridLayer) {
      P.gridLayer.eachLayer(function (layer) {
        var on = P.state.selected.indexOf(layer.feature.properties.code) >= 0;
        layer.setStyle(on ? SELECTED_STYLE : GRID_STYLE);
      });
    }
    var el = byId('gp-selected');
    if (el) { el.textContent = P.state.selected.length ? P.state.selected.join(', ') : '–'; }
  }

  P.select = function (code) {
    var codes = P.state.selected.filter(function (c) { return c !== code; });
    if (codes.length === P.state.selected.length) { codes.push(code); }
    setSelected(codes);
  };

  function drawGrids(fc) {
    P.gridLayer.clearLayers();
    L.geoJSON(GP.displayGeoJSON(fc), {
      style: function () { return GRID_STYLE; },
      onEachFeature: function (feature, layer) {
        var p = feature.properties;
        layer.options.className = 'gp-grid gp-grid-' + p.code;
        // the whole code when zoomed in, the 3-digit sequence (bold) when the map is crowded
        layer.bindTooltip('<span class="gp-code-village">' + esc(p.code.slice(0, 12)) +
                          '</span><b>' + esc(p.code.slice(12)) + '</b>',
                          {permanent: true, direction: 'center', className: 'gp-code-label'});
        layer.on('click', function () { P.select(p.code); });
      }
    }).eachLayer(function (layer) { P.gridLayer.addLayer(layer); });
    P.state.grids = fc.features.length;
    byId('gp-grid-count').textContent = String(fc.features.length);
    setSelected(P.state.selected.filter(function (c) {
      return fc.features.some(function (f) { return f.properties.code === c; });
    }));
  }

  function drawViolations(fc) {
    P.violationLayer.clearLayers();
    var features = (fc && fc.features) || [];
    L.geoJSON(GP.displayGeoJSON({
      type: 'FeatureCollection',
      features: features.filter(function (f) { return f.geometry; })
    }), {
      style: {color: cfg().violationColour, weight: 3, dashArray: '6 3',
              fillColor: cfg().violationColour, fillOpacity: 0.4, className: 'gp-violation'},
      interactive: true,
      onEachFeature: function (feature, layer) {
        layer.bindTooltip(esc(feature.properties.kind) + ': ' + esc(feature.properties.reason));
      }
    }).eachLayer(function (layer) { P.violationLayer.addLayer(layer); });
    P.state.violations = features.length;
    var list = byId('gp-violations');
    if (list) {
      list.innerHTML = features.map(function (f) {
        return '<li>' + esc(f.properties.kind) + ': ' + esc(f.properties.reason) + '</li>';
      }).join('');
    }
  }

  function drawDiff(body) {
    P.diffLayer.clearLayers();
    var colours = cfg().diffColours;
    L.geoJSON(GP.displayGeoJSON(body), {
      style: function (f) {
        var change = f.properties.change;
        return {color: colours[change], weight: change === 'changed' ? 3 : 2,
                dashArray: change === 'removed' ? '4 4' : null, fillColor: colours[change],
                fillOpacity: change === 'removed' ? 0.05 : 0.3,
                className: 'gp-diff gp-diff-' + change};
      },
      interactive: false
    }).eachLayer(function (layer) { P.diffLayer.addLayer(layer); });
    P.state.diff = {added: body.added, removed: body.removed, changed: body.changed};
    byId('gp-diff-summary').textContent = '对比 against #' + body.against + ': 新增 added ' +
      body.added + ' · 删除 removed ' + body.removed + ' · 变更 changed ' + body.changed;
  }

  /* ---- loading ---------------------------------------------------------------------------- */
  P.load = function () {
    P.state.loaded = false;
    return GP.api(base()).then(function (layout) {
      P.state.version = layout.version;
      P.state.status = layout.status;
      byId('gp-version').textContent = String(layout.version);
      byId('gp-status').textContent = layout.status;
      var jobs = [GP.api(base() + '/grids').then(drawGrids), P.validate()];
      if (layout.cloned_from) {
        jobs.push(GP.api(base() + '/diff').then(drawDiff));
      }
      return Promise.all(jobs);
    }).then(function () {
      P.state.loaded = true;
    }).catch(function (err) {
      GP.state.lastError = err.message;
      message(err.message, 'error');
      P.state.loaded = true;
    });
  };

  P.validate = function () {
    return GP.api(base() + '/validate').then(function (report) {
      drawViolations(report.violations);
      if (report.valid) { message('校验通过 valid', 'ok'); }
      return report;
    });
  };

  /* ---- edits ------------------------------------------------------------------------------ */
  function edit(kind, payload) {
    P.state.busy = true;
    payload.version = P.state.version;
    message('提交中 saving…');
    return GP.api(base() + '/edits/' + kind, {method: 'POST', body: payload})
      .then(function (result) {
        P.state.edits += 1;
        var added = (result.added || []).length ? ' 新增 added ' + result.added.join(', ') : '';
        var removed = (result.removed || []).length ? ' 删除 removed ' + result.removed.join(', ') : '';
        setSelected([]);
        return P.load().then(function () {
          message('已保存 saved: v' + result.version + added + removed, 'ok');
          return result;
        });
      })
      .catch(function (err) { return failed(err); })
      .then(function (value) {
        P.state.busy = false;
        var drawn = window[cfg().drawn];
        if (drawn) { drawn.clearLayers(); }
        return value;
      });
  }

  function failed(err) {
    if (err.status === 409 && err.body && err.body.current_version !== undefined) {
      var text = '版本冲突 version conflict: ' + err.message + ' — 已重新加载 reloaded';
      return P.load().then(function () { message(text, 'error'); return null; });
    }
    if (err.body && err.body.violations) { drawViolations(err.body.violations); }
    if (err.body && err.body.offending) {
      drawViolations({features: [{type: 'Feature', geometry: err.body.offending,
                                  properties: {kind: 'refused', reason: err.message}}]});
    }
    message((err.status === 409 ? '冲突 conflict: ' : '未保存 refused: ') + err.message, 'error');
    return null;
  }

  P.split = function (code, coords) {
    return edit('split', {code: code, line: {type: 'LineString', coordinates: coords}});
  };

  P.reshape = function (code, ring) {
    var closed = ring.slice();
    var a = closed[0], b = closed[closed.length - 1];
    if (a[0] !== b[0] || a[1] !== b[1]) { closed.push(a); }
    return edit('reshape', {code: code, geometry: {type: 'Polygon', coordinates: [closed]}});
  };

  P.merge = function (codes) {
    return edit('merge', {codes: codes});
  };

  P.activate = function () {
    message('启用中 activating…');
    return GP.api(base() + '/activate', {method: 'POST', body: {version: P.state.version}})
      .then(function (layout) {
        P.state.status = layout.status;
        byId('gp-status').textContent = layout.status;
        ['gp-split', 'gp-reshape', 'gp-merge', 'gp-activate'].forEach(function (id) {
          byId(id).disabled = true;
        });
        message(layout.scheduled ? '已排期 scheduled' : '已启用 active', 'ok');
        return layout;
      })
      .catch(function (err) { return failed(err); });
  };

  /* ---- drawing ---------------------------------------------------------------------------- */
  function needOne(what) {
    if (P.state.selected.length !== 1) {
      message('请先选择一个网格 select one grid first (' + what + ')', 'error');
      return null;
    }
    return P.state.selected[0];
  }

  function onCreated(e) {
    var layer = e.layer;
    if (e.layerType === 'polyline') {
      var code = needOne('切分 split');
      if (code) { P.split(code, toWgs84(layer.getLatLngs())); }
    } else if (e.layerType === 'polygon') {
      var target = needOne('重塑 reshape');
      if (target) { P.reshape(target, toWgs84(layer.getLatLngs()[0])); }
    }
  }

  function startEditor() {
    var map = GP.map();
    // one group per layer for the page's life, so the layer switcher keeps pointing at them
    P.diffLayer = L.featureGroup().addTo(map);
    P.gridLayer = L.featureGroup().addTo(map);
    P.violationLayer = L.featureGroup().addTo(map);
    var shortLabels = function () {
      map.getContainer().classList.toggle('gp-short-codes', map.getZoom() < 12);
    };
    map.on('zoomend', shortLabels);
    shortLabels();
    map.on('draw:created', onCreated);
    byId('gp-validate').addEventListener('click', function () { P.validate(); });
    byId('gp-activate').addEventListener('click', function () { P.activate(); });
    byId('gp-merge').addEventListener('click', function () {
      if (P.state.selected.length !== 2) {
        message('请选择两个相邻网格 select two neighbouring grids', 'error');
        return;
      }
      P.merge(P.state.selected.slice());
    });
    byId('gp-split').addEventListener('click', function () {
      if (needOne('切分 split')) {
        new L.Draw.Polyline(map, {shapeOptions: {color: '#2166ac', weight: 3}}).enable();
      }
    });
    byId('gp-reshape').addEventListener('click', function () {
      if (needOne('重塑 reshape')) {
        new L.Draw.Polygon(map, {allowIntersection: false, showArea: false}).enable();
      }
    });
    var overlays = {'网格 Grids': P.gridLayer, '问题 Violations': P.violationLayer};
    if (cfg().clonedFrom) { overlays['差异 Diff'] = P.diffLayer; }
    L.control.layers(null, overlays, {position: 'topright', collapsed: false}).addTo(map);
    P.load();
  }

  function startChooser() {
    Array.prototype.forEach.call(document.querySelectorAll('.gp-clone'), function (button) {
      button.addEventListener('click', function () {
        P.clone(Number(button.getAttribute('data-layout')), byId('gp-clone-name').value);
      });
    });
    P.state.loaded = true;
  }

  P.clone = function (layoutId, name) {
    message('复制中 cloning…');
    return GP.api('/api/v1/layouts/' + encodeURIComponent(layoutId) + '/clone',
                  {method: 'POST', body: {name: name || '规划调整 redraw'}})
      .then(function (draft) {
        window.location.assign(cfg().path + '?layout=' + encodeURIComponent(draft.id));
        return draft;
      })
      .catch(function (err) { message(err.message, 'error'); return null; });
  };

  P.start = function () {
    if (cfg().layout) { startEditor(); } else { startChooser(); }
  };
}());
