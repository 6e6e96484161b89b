/* GridPatrol phone page: the grid on a Leaflet map — boundary, blind spots, alarm points, households,
 * the worker's own patrol track and reports. The basemap is a tile layer that may fail (no signal,
 * blocked): the page's features are drawn all the same and a note says the tiles are missing.
 * Data is WGS-84; on a GCJ-02 basemap (AMap) it is converted for display only (gridpatrol.js).
 */
(function () {
  'use strict';

  var M = window.GPM = window.GPM || {};
  var GP = window.GP;
  var esc = GP.esc;

  /* is [lon, lat] inside a GeoJSON Polygon/MultiPolygon geometry (even-odd rule)? */
  M.inside = function (geometry, lon, lat) {
    if (!geometry) { return false; }
    var polygons = geometry.type === 'Polygon' ? [geometry.coordinates]
      : geometry.type === 'MultiPolygon' ? geometry.coordinates : [];
    return polygons.some(function (rings) {
      var hit = false;
      rings.forEach(function (ring) {
        for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
          var xi = ring[i][0], yi = ring[i][1], xj = ring[j][0], yj = ring[j][1];
          if ((yi > lat) !== (yj > lat) && lon < (xj - xi) * (lat - yi) / (yj - yi) + xi) {
            hit = !hit;
          }
        }
      });
      return hit;
    });
  };

  M.GridMap = function (element, cfg, onTilesFailed) {
    var map = L.map(element, {zoomControl: true, attributionControl: true, tap: true});
    map.setView([44.2, 115.5], 7);
    var failed = 0;
    L.tileLayer(cfg.tiles, {
      attribution: cfg.attr, subdomains: cfg.subdomains || 'abc', maxZoom: 18,
      crossOrigin: false
    }).on('tileerror', function () {
      failed += 1;
      if (failed === 1 && onTilesFailed) { onTilesFailed(); }
    }).addTo(map);
    this.map = map;
    this.layers = {
      grid: L.featureGroup().addTo(map),
      blind: L.featureGroup().addTo(map),
      homes: L.featureGroup().addTo(map),
      alerts: L.featureGroup().addTo(map),
      track: L.featureGroup().addTo(map),
      marks: L.featureGroup().addTo(map)
    };
    this.counts = {grid: 0, blind: 0, alerts: 0, homes: 0, track: 0};
  };

  /* the grid's data (GET /api/v1/m/grids/{code}); fit: zoom to it (a first draw) */
  M.GridMap.prototype.drawGrid = function (data, fit) {
    var L_ = this.layers, counts = this.counts;
    L_.grid.clearLayers();
    L_.blind.clearLayers();
    L_.alerts.clearLayers();
    L_.homes.clearLayers();
    counts.grid = counts.blind = counts.alerts = counts.homes = 0;
    if (!data || !data.grid) { return; }
    L.geoJSON(GP.displayGeoJSON(data.grid), {
      style: {color: '#1d5c8f', weight: 3, fillColor: '#1d5c8f', fillOpacity: 0.06,
              className: 'm-grid-outline'},
      interactive: false
    }).addTo(L_.grid);
    counts.grid = 1;
    var blind = (data.blind_spots && data.blind_spots.features) || [];
    if (blind.length) {
      L.geoJSON(GP.displayGeoJSON(data.blind_spots), {
        style: {color: '#2d004b', weight: 1, fillColor: '#2d004b', fillOpacity: 0.4,
                className: 'm-blind'},
        interactive: false
      }).addTo(L_.blind);
    }
    counts.blind = blind.length;
    var alerts = (data.alert_points && data.alert_points.features) || [];
    alerts.forEach(function (f) {
      if (!f.geometry || f.geometry.type !== 'Point') { return; }
      var c = f.geometry.coordinates, p = f.properties || {};
      L.circleMarker(GP.latLng(c[0], c[1]), {
        radius: 7, weight: 2, color: '#ffffff', fillColor: '#8c510a', fillOpacity: 0.95,
        className: 'm-alert-point'
      }).bindTooltip('报警点 ' + esc(p.name || p.code || '') + (p.kind ? ' · ' + esc(p.kind) : ''))
        .addTo(L_.alerts);
    });
    counts.alerts = alerts.length;
    var homes = (data.household_points && data.household_points.features) || [];
    homes.forEach(function (f) {
      if (!f.geometry || f.geometry.type !== 'Point') { return; }
      var c = f.geometry.coordinates, n = (f.properties || {}).count || 1;
      L.circleMarker(GP.latLng(c[0], c[1]), {
        radius: 3, weight: 1, color: '#ffffff', fillColor: '#4d4d4d', fillOpacity: 0.8,
        className: 'm-household', interactive: false
      }).addTo(L_.homes);
      counts.homes += n > 0 ? 1 : 0;
    });
    if (fit) { this.fit(); }
  };

  M.GridMap.prototype.fit = function () {
    var b = this.layers.grid.getBounds();
    if (b.isValid()) { this.map.fitBounds(b, {padding: [12, 12], maxZoom: 17}); }
  };

  /* the worker's own patrol: [[lon, lat], …] as a line, the last point as a dot */
  M.GridMap.prototype.drawTrack = function (points) {
    var layer = this.layers.track;
    layer.clearLayers();
    this.counts.track = points.length;
    if (!points.length) { return; }
    var lls = points.map(function (p) { return GP.latLng(p[0], p[1]); });
    L.polyline(lls, {color: '#009e73', weight: 4, opacity: 0.9, className: 'm-track'})
      .addTo(layer);
    L.circleMarker(lls[lls.length - 1], {radius: 7, weight: 3, color: '#ffffff',
      fillColor: '#009e73', fillOpacity: 1, className: 'm-me'}).addTo(layer);
  };

  /* one chosen place (the report's), or none */
  M.GridMap.prototype.mark = function (lon, lat) {
    var layer = this.layers.marks;
    layer.clearLayers();
    if (lon === null || lon === undefined) { return; }
    L.circleMarker(GP.latLng(lon, lat), {radius: 10, weight: 3, color: '#b10026',
      fillColor: '#ffffff', fillOpacity: 0.6, className: 'm-place'}).addTo(layer);
  };

  /* a tap as WGS-84 [lon, lat] */
  M.GridMap.prototype.onTap = function (callback) {
    this.map.on('click', function (e) {
      var ll = e.latlng;
      callback(GP.gcj() ? GP.gcj02ToWgs84(ll.lng, ll.lat) : [ll.lng, ll.lat]);
    });
  };

  M.GridMap.prototype.shown = function () {
    this.map.invalidateSize();
  };
}());
