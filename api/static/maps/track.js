/* GridPatrol track replay (轨迹回放): the replay speed in words, and the stops table.
 *
 * The time slider steps one minute of the track per frame (period PT1M), so its speed is
 * minutes of track per second of replay: said so, instead of the plugin's bare "fps" beside an
 * icon font the page does not load. The slider's time is China time in any browser. A stop's row zooms the map to that stop and opens its
 * tooltip. No inline handlers (the page's CSP forbids them).
 */
(function () {
  'use strict';
  var GP = window.GP;

  /* The slider's time in China time (UTC+8) whatever the browser's zone: the day, the stops
   * table and the leaders who read them all speak 北京时间. (folium's control formats with
   * moment in the browser's own zone; an init hook outranks that subclass's method.) */
  function chinaTime(date) {
    var t = new Date(date.getTime() + 8 * 3600 * 1000);
    return t.toISOString().slice(0, 19).replace('T', ' ') + ' 北京时间';
  }

  if (L.Control.TimeDimension) {
    L.Control.TimeDimension.prototype._getDisplaySpeed = function (fps) {
      return fps + ' 分钟/秒 min/s';
    };
    L.Control.TimeDimension.addInitHook(function () {
      this._getDisplayDateFormat = chinaTime;
    });
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
