/* GridPatrol planner page (网格规划调整): a draft layout's grids (vector tiles, codes when zoomed
 * in), selection,
 * drawn edits (split along a line, reshape to an outline, merge two selected grids) sent to the
 * redraw API with the draft's version, validation problems, the diff against the layout the
 * draft was cloned from, and activation. A stale version (409) is shown and the draft reloaded.
 *
 * GP.planner.split(code, coords), .reshape(code, ring), .merge(codes), .validate([villages]),
 * .assignWorker(code, staffId), .showWorker() (refill the worker panel), .activate(),
 * .rollback(), .abandon(layoutId, version) are what
 * the buttons and Leaflet.draw call; coordinates are WGS-84 [lon, lat]. An edit re-validates only
 * the village it touched (the whole draft is validated on opening, by the button, and by the
 * server before activation). The status line says what happened: an edit saved but leaving
 * problems, a validation that failed or could not run, are never reported as plain "saved".
 * Needs gridpatrol.js (GP, GCJ-02 display conversion, API calls) loaded first.
 */
(function () {
  'use strict';

  var GP = window.GP;
  var esc = GP.esc;
  var P = GP.planner = {
    state: {loaded: false, version: null, status: null, grids: 0, violations: 0,
            diff: null, selected: [], message: '', busy: false, edits: 0, report: null,
            validated: [], features: {}, staff: {}}
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

  var VALIDATE_ON_OPEN = 2000;  // larger drafts are validated on request and by activation

  function gridStyle(code) {
    var on = P.state.selected.indexOf(code) >= 0;
    var style = on ? SELECTED_STYLE : GRID_STYLE;
    return {color: style.color, weight: style.weight, fill: true, fillColor: style.fillColor,
            fillOpacity: style.fillOpacity, className: 'gp-grid gp-grid-' + code};
  }

  function setSelected(codes) {
    var before = P.state.selected;
    P.state.selected = codes.slice(-2);
    if (P.gridLayer) {
      before.concat(P.state.selected).forEach(function (code) {
        if (P.state.selected.indexOf(code) >= 0) {
          P.gridLayer.setFeatureStyle(code, gridStyle(code));
        } else {
          P.gridLayer.resetFeatureStyle(code);
        }
      });
    }
    var el = byId('gp-selected');
    if (el) { el.textContent = P.state.selected.length ? P.state.selected.join(', ') : '–'; }
    showWorker();
  }

  /* ---- the selected grid's worker (一格一员) ------------------------------------------------ */
  function workerLabel(p) {
    return p && p.worker ? p.worker + (p.worker_phone ? ' ' + p.worker_phone : '') : '无 none';
  }

  /* The selected grid's worker and the staff of its village to choose from (each marked with
   * the grids of this draft they already hold). */
  function showWorker() {
    var panel = byId('gp-worker-panel');
    if (!panel) { return Promise.resolve(); }
    var code = P.state.selected.length === 1 ? P.state.selected[0] : null;
    panel.hidden = !code;
    if (!code) { return Promise.resolve(); }
    var known = P.state.features[code];
    byId('gp-worker-current').textContent = known ? workerLabel(known.properties) : '…';
    var select = byId('gp-worker-select');
    if (select.dataset.code !== code) {
      /* Another grid's list must not be chosen from while this grid's list loads. */
      select.dataset.code = code;
      select.innerHTML = '<option value="">加载中 loading…</option>';
    }
    var village = code.slice(0, 12);
    var people = P.state.staff[village] ? Promise.resolve(P.state.staff[village]) :
      GP.api('/api/v1/staff?village=' + encodeURIComponent(village)).then(function (list) {
        P.state.staff[village] = list;
        return list;
      });
    return Promise.all([people, villageGrids(village)]).then(function (done) {
      if (P.state.selected.length !== 1 || P.state.selected[0] !== code) { return; }
      var feature = P.state.features[code];
      byId('gp-worker-current').textContent = feature ? workerLabel(feature.properties) : '–';
      var holds = {};
      Object.keys(P.state.features).forEach(function (c) {
        var q = P.state.features[c].properties;
        if (q.worker_phone) { holds[q.worker_phone] = (holds[q.worker_phone] || []).concat([c]); }
      });
      /* The list is refilled when the village's grids arrive (and after an assignment): keep
       * what the planner has already chosen in it. */
      var chosen = select.value;
      select.innerHTML =
        '<option value="">— 选择网格员 choose a worker —</option>' +
        done[0].filter(function (s) { return s.active !== false; }).map(function (s) {
          var held = (holds[s.phone] || []).filter(function (c) { return c !== code; });
          return '<option value="' + esc(String(s.id)) + '">' + esc(s.name) + ' ' +
            esc(s.phone || '') + (held.length ? ' · 已负责 holds ' + esc(held.join(', ')) : '') +
            '</option>';
        }).join('');
      if (chosen && select.querySelector('option[value="' + chosen + '"]')) {
        select.value = chosen;
      }
    }).catch(function (err) {
      message('网格员列表加载失败 staff list failed: ' + err.message, 'error');
    });
  }

  P.showWorker = showWorker;

  P.assignWorker = function (code, staffId) {
    P.state.busy = true;
    message('指派中 assigning…');
    return GP.api(base() + '/grids/' + encodeURIComponent(code) + '/worker',
                  {method: 'PUT', body: {staff_id: staffId}})
      .then(function (grid) {
        return reloadGrids()
          .then(function () { return villageGrids(code.slice(0, 12)); })
          .then(function () { showWorker(); return P.validate([code.slice(0, 12)]); })
          .then(function (report) {
            var who = grid.worker_name || grid.worker || ('#' + staffId);
            var text = '已指派 assigned ' + code + ' → ' + who;
            message(text + outcome(report), report && report.valid ? 'ok' : 'error');
            return grid;
          });
      })
      .catch(function (err) {
        message('未指派 not assigned: ' + err.message, 'error');
        return null;
      })
      .then(function (value) { P.state.busy = false; return value; });
  };

  P.select = function (code) {
    var codes = P.state.selected.filter(function (c) { return c !== code; });
    if (codes.length === P.state.selected.length) { codes.push(code); }
    setSelected(codes);
  };

  /* The draft's grids are vector tiles (``/tiles/layout_grids``): a league draft is 8,704 grids,
   * far too many for one GeoJSON. A click on a tile's grid selects it; its properties (code,
   * village, worker) come with the tile. */
  function tileUrl() {
    return '/tiles/layout_grids/{z}/{x}/{y}.pbf?layout=' + encodeURIComponent(cfg().layout) +
      (GP.gcj() ? '&crs=gcj02' : '');
  }

  function makeGridLayer() {
    var layer = L.vectorGrid.protobuf(tileUrl(), {
      rendererFactory: L.svg.tile,
      interactive: true,
      pane: 'gpGrids',
      minZoom: cfg().gridMinZoom,
      maxNativeZoom: 18,
      fetchOptions: {credentials: 'same-origin'},
      getFeatureId: function (f) { return f.properties.code; },
      vectorTileLayerStyles: {layout_grids: function (p) { return gridStyle(p.code); }}
    });
    layer.on('click', function (e) {
      var p = e.layer && e.layer.properties;
      if (!p || !p.code) { return; }
      P.state.features[p.code] = {properties: p};
      P.select(p.code);
    });
    return layer;
  }

  /* Village outlines, so a league or county view shows where to zoom in. */
  function makeVillageLayer() {
    return L.vectorGrid.protobuf('/tiles/admin_areas/{z}/{x}/{y}.pbf?level=village' +
                                 (GP.gcj() ? '&crs=gcj02' : ''), {
      rendererFactory: L.svg.tile,
      interactive: false,
      maxNativeZoom: 18,
      fetchOptions: {credentials: 'same-origin'},
      vectorTileLayerStyles: {admin_areas: {color: '#777777', weight: 0.8, fill: false,
                                            className: 'gp-village'}}
    });
  }

  function gridsShown() { return GP.map().getZoom() >= cfg().gridMinZoom; }

  /* Redraw the tiles (after an edit); resolves when the tiles in view have loaded (at once
   * when zoomed out beyond the grids). */
  function reloadGrids() {
    if (!gridsShown()) {
      // nothing drawn out here (Leaflet's redraw() would fetch tiles below the layer's minZoom:
      // a league's worth of grids); zooming in fetches the tiles afresh
      return drawLabels();
    }
    return new Promise(function (resolve) {
      P.gridLayer.once('load', function () { resolve(); });
      P.gridLayer.redraw();
    }).then(function () { return drawLabels(); });
  }

  /* The grids of one village as GeoJSON (a few): their workers, for the worker panel. */
  function villageGrids(village) {
    return GP.api(base() + '/grids?village=' + encodeURIComponent(village)).then(function (fc) {
      fc.features.forEach(function (f) { P.state.features[f.properties.code] = f; });
      return fc;
    });
  }

  /* Codes are written on the grids in view, from cfg().labelZoom in only. */
  function drawLabels() {
    var map = GP.map();
    var seq = P.labelSeq = (P.labelSeq || 0) + 1;
    if (map.getZoom() < cfg().labelZoom) {
      P.labelLayer.clearLayers();
      P.state.labels = 0;
      return Promise.resolve();
    }
    return GP.api(base() + '/grids?bbox=' + GP.dataBbox(map)).then(function (fc) {
      if (seq !== P.labelSeq) { return; }
      P.labelLayer.clearLayers();
      fc.features.forEach(function (f) {
        var p = f.properties;
        P.state.features[p.code] = f;
        var centre = L.geoJSON(GP.displayGeoJSON(f)).getBounds().getCenter();
        L.marker(centre, {
          interactive: false,
          keyboard: false,
          icon: L.divIcon({
            className: 'gp-code-label',
            iconSize: null,
            html: '<span class="gp-code-text"><span class="gp-code-village">' +
                  esc(p.code.slice(0, 12)) + '</span><b>' + esc(p.code.slice(12)) + '</b></span>'
          })
        }).addTo(P.labelLayer);
      });
      P.state.labels = fc.features.length;
    }).catch(function (err) { message('标注加载失败 labels failed: ' + err.message, 'error'); });
  }

  function drawViolations(fc) {
    P.violationLayer.clearLayers();
    var features = (fc && fc.features) || [];
    P.state.shown = features;
    L.geoJSON(GP.displayGeoJSON({
      type: 'FeatureCollection',
      features: features.filter(function (f) { return f.geometry; })
    }), {
      style: {color: cfg().violationColour, weight: 3, dashArray: '6 3',
              fillColor: cfg().violationColour, fillOpacity: 0.4, className: 'gp-violation'},
      interactive: true,
      pane: 'gpProblems',
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

  /* ---- loading and validation ---------------------------------------------------------- */
  /* The validation's outcome for the status line: valid, or how many problems remain. */
  function outcome(report) {
    if (!report) { return ' · 未校验 not validated'; }
    if (report.valid) { return ' · 校验通过 valid'; }
    return ' · 校验未通过 invalid: ' + P.state.violations + ' 个问题 problems (见列表 see the list)';
  }

  /* Load the draft: its figures, the grids in view (none when zoomed out), validation when small;
   * ``pending`` is the draft's request when already sent, ``drawn`` what else the first view
   * waits for (the village outlines in view). */
  P.load = function (pending, drawn) {
    P.state.loaded = false;
    var failures = [];
    return (pending || GP.api(base())).then(function (layout) {
      P.state.version = layout.version;
      P.state.status = layout.status;
      byId('gp-version').textContent = String(layout.version);
      byId('gp-status').textContent = layout.status;
      P.state.grids = layout.grids;
      byId('gp-grid-count').textContent = String(layout.grids);
      showRollback();
      var jobs = [reloadGrids().catch(function (err) { failures.push(err); })];
      if (layout.grids <= VALIDATE_ON_OPEN) {
        jobs.push(P.validate().catch(function (err) { failures.push(err); }));
      } else {
        message('草稿较大 a large draft (' + layout.grids + ' 网格 grids): 每次编辑校验所涉村 ' +
                'each edit validates its village; 点击校验 press Validate for the whole draft ' +
                '(启用前也会校验 activation validates it too)', 'note');
      }
      if (layout.cloned_from) {
        // drawn when it comes: the page is usable before (the league's diff takes seconds)
        P.state.diffLoaded = false;
        GP.api(base() + '/diff').then(drawDiff).catch(function (err) {
          message('对比加载失败 diff failed: ' + err.message, 'error');
        }).then(function () { P.state.diffLoaded = true; });
      }
      if (drawn) { jobs.push(drawn); }
      return Promise.all(jobs);
    }).then(function () {
      P.state.loaded = true;
      if (failures.length) { throw failures[0]; }
      return P.state.report;
    }).catch(function (err) {
      GP.state.lastError = err.message;
      message('加载失败 loading failed: ' + err.message, 'error');
      P.state.loaded = true;
      throw err;
    });
  };

  /* Validate the whole draft (as far as the user's scope reaches), or only ``villages``: their
   * problems replace the ones shown for them, the others stay. */
  P.validate = function (villages) {
    var only = villages && villages.length ? villages : null;
    var query = only ? '?' + only.map(function (v) {
      return 'village=' + encodeURIComponent(v);
    }).join('&') : '';
    return GP.api(base() + '/validate' + query).then(function (report) {
      var features = report.violations.features;
      if (only) {
        features = (P.state.shown || []).filter(function (f) {
          return only.indexOf(f.properties.village) < 0;
        }).concat(features);
      }
      drawViolations({type: 'FeatureCollection', features: features});
      P.state.report = {valid: features.length === 0, problems: features.length,
                        villages: only};
      P.state.validated.push(only ? only.join(',') : '*');
      if (!only) {
        if (P.state.report.valid) {
          message('校验通过 valid', 'ok');
        } else {
          message('校验未通过 invalid: ' + features.length + ' 个问题 problems (见列表 see the list)',
                  'error');
        }
      }
      return P.state.report;
    }, function (err) {
      P.state.report = null;
      message('校验失败 validation failed: ' + err.message, 'error');
      throw err;
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
        var saved = '已保存 saved: v' + result.version + added + removed;
        setSelected([]);
        P.state.version = result.version;
        byId('gp-version').textContent = String(result.version);
        P.state.grids += (result.added || []).length - (result.removed || []).length;
        byId('gp-grid-count').textContent = String(P.state.grids);
        var diff = cfg().clonedFrom ? GP.api(base() + '/diff').then(drawDiff) : null;
        return Promise.all([reloadGrids(), P.validate([result.village]), diff])
          .then(function (done) {
            var report = done[1];
            message(saved + outcome(report), report.valid ? 'ok' : 'error');
            return result;
          }, function (err) {
            message(saved + ' — 但刷新失败 but refreshing failed: ' + err.message, 'error');
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
      return P.load().catch(function () { return null; })
        .then(function () { message(text, 'error'); return null; });
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

  var EDITING = ['gp-split', 'gp-reshape', 'gp-merge', 'gp-activate', 'gp-abandon',
                 'gp-worker-select', 'gp-worker-assign'];

  P.activate = function () {
    message('启用中 activating… (校验整个草稿 validating the whole draft)');
    return GP.api(base() + '/activate', {method: 'POST', body: {version: P.state.version}})
      .then(function (layout) {
        P.state.status = layout.status;
        byId('gp-status').textContent = layout.status;
        if (!layout.scheduled) {
          EDITING.forEach(function (id) { if (byId(id)) { byId(id).disabled = true; } });
        }
        showRollback();
        message(layout.scheduled ? '已排期 scheduled' : '已启用 active', 'ok');
        return layout;
      })
      .catch(function (err) {
        if (err.body && err.body.violations) {
          drawViolations(err.body.violations);
          message('未启用 not activated: ' + err.message, 'error');
          return null;
        }
        return failed(err);
      });
  };

  /* After activating, the layout this draft replaced can be made active again. */
  function showRollback() {
    var button = byId('gp-rollback');
    if (!button) { return; }
    var previous = cfg().clonedFrom;
    button.hidden = !(previous && P.state.status === 'active');
    if (previous) { button.textContent = '回退到 #' + previous + ' Roll back'; }
  }

  P.rollback = function () {
    var previous = cfg().clonedFrom;
    message('回退中 rolling back…');
    return GP.api('/api/v1/layouts/' + encodeURIComponent(previous) + '/rollback',
                  {method: 'POST', body: {}})
      .then(function (layout) {
        return GP.api(base()).then(function (mine) {
          P.state.status = mine.status;
          byId('gp-status').textContent = mine.status;
          showRollback();
          message('已回退 rolled back: #' + layout.id + ' ' + layout.status + ' · #' +
                  cfg().layout + ' ' + mine.status, 'ok');
          return layout;
        });
      })
      .catch(function (err) { message('未回退 not rolled back: ' + err.message, 'error'); return null; });
  };

  /* Delete a draft (confirmed first); back to the list of drafts. */
  P.abandon = function (layoutId, version) {
    if (!window.confirm('放弃草稿 #' + layoutId + '? 其网格将被删除 Abandon draft #' + layoutId +
                        '? Its grids are deleted.')) {
      message('未放弃 kept', 'note');
      return Promise.resolve(null);
    }
    message('放弃中 abandoning…');
    var query = version !== null && version !== undefined ? '?version=' + encodeURIComponent(version) : '';
    return GP.api('/api/v1/layouts/' + encodeURIComponent(layoutId) + query, {method: 'DELETE'})
      .then(function (body) {
        P.state.abandoned = layoutId;
        message('已放弃 abandoned: #' + layoutId, 'ok');
        window.location.assign(cfg().path);
        return body;
      })
      .catch(function (err) { message('未放弃 not abandoned: ' + err.message, 'error'); return null; });
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
    // the draft's figures first: tile requests queue behind it (six connections a host)
    var pending = GP.api(base());
    // one group per layer for the page's life, so the layer switcher keeps pointing at them
    P.diffLayer = L.featureGroup().addTo(map);
    // the grids (and the selected one's outline) above the diff, the problems above both
    map.createPane('gpGrids').style.zIndex = 420;
    map.createPane('gpProblems').style.zIndex = 430;
    P.villageLayer = makeVillageLayer();
    var outlines = new Promise(function (resolve) { P.villageLayer.once('load', resolve); });
    P.villageLayer.addTo(map);
    P.gridLayer = makeGridLayer().addTo(map);
    P.labelLayer = L.layerGroup().addTo(map);
    P.violationLayer = L.featureGroup().addTo(map);
    var hint = function () { byId('gp-zoom-hint').hidden = gridsShown(); };
    map.on('zoomend', hint);
    hint();
    map.on('moveend', function () { drawLabels(); });
    map.on('draw:created', onCreated);
    byId('gp-validate').addEventListener('click', function () {
      message('校验中 validating…');
      P.validate().catch(function () { return null; });
    });
    byId('gp-activate').addEventListener('click', function () { P.activate(); });
    byId('gp-rollback').addEventListener('click', function () { P.rollback(); });
    byId('gp-abandon').addEventListener('click', function () {
      P.abandon(cfg().layout, P.state.version);
    });
    byId('gp-worker-assign').addEventListener('click', function () {
      var value = byId('gp-worker-select').value;
      if (P.state.selected.length !== 1 || !value) {
        message('请选择一个网格和网格员 select one grid and a worker', 'error');
        return;
      }
      P.assignWorker(P.state.selected[0], Number(value));
    });
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
    var overlays = {'村界 Villages': P.villageLayer, '网格 Grids': P.gridLayer,
                    '编码 Codes': P.labelLayer,
                    '问题 Violations': P.violationLayer};
    if (cfg().clonedFrom) { overlays['差异 Diff'] = P.diffLayer; }
    L.control.layers(null, overlays, {position: 'topright', collapsed: false}).addTo(map);
    P.load(pending, outlines).catch(function () { return null; });
  }

  function startChooser() {
    Array.prototype.forEach.call(document.querySelectorAll('.gp-clone'), function (button) {
      button.addEventListener('click', function () {
        P.clone(Number(button.getAttribute('data-layout')), byId('gp-clone-name').value);
      });
    });
    Array.prototype.forEach.call(document.querySelectorAll('.gp-abandon'), function (button) {
      button.addEventListener('click', function () {
        P.abandon(Number(button.getAttribute('data-layout')),
                  Number(button.getAttribute('data-version')));
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
