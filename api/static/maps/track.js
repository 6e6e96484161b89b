/* GridPatrol track replay (轨迹回放): the replay speed in words, and the stops table.
 *
 * The time slider steps one minute of the track per frame (period PT1M), so its speed is
 * minutes of track per second of replay: said so, instead of the plugin's bare "fps" beside an
 * icon font the page does not load. A stop's row zooms the map to that stop and opens its
 * tooltip. No inline handlers (the page's CSP forbids them).
 */
(function () {
  'use strict';
  var GP = window.GP;

  if (L.Control.TimeDimension) {
    L.Control.TimeDimension.prototype._getDisplaySpeed = function (fps) {
      return fps + ' 分钟/秒 min/s';
    };
  }

  GP.zoomToStop = function (row) {
    var i = row.getAttribute('data-i');
    var ll = L.latLng(Number(row.getAttribute('data-lat')), Number(row.getAttribute('data-lon')));
    var map = GP.map();
    map.setView(ll, Math.max(map.getZoom(), 16));
    map.eachLayer(function (layer) {
      var cls = layer.options && layer.options.className;
      if (cls && cls.split(' ').indexOf('gp-stop-' + i) >= 0 && layer.openTooltip) {
        layer.openTooltip();
      }
    });
    Array.prototype.forEach.call(document.querySelectorAll('.gp-stop-row'), function (r) {
      r.classList.toggle('gp-selected', r === row);
    });
  };

  document.addEventListener('click', function (e) {
    var row = e.target && e.target.closest && e.target.closest('.gp-stop-row');
    if (row) { GP.zoomToStop(row); }
  });
}());
