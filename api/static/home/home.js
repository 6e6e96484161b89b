/* GridPatrol home page: keep the scope's figures current (GET /api/v1/summary with the page's
   cookie every 30 s while the page is visible). No token here: the cookie is HTTP-only. */
(function () {
  'use strict';
  var REFRESH_MS = 30000;

  function set(key, value) {
    var el = document.querySelector('[data-figure="' + key + '"] .gp-value');
    if (el) { el.textContent = String(value); }
  }

  function show(f) {
    ['online', 'stale', 'offline', 'total'].forEach(function (k) {
      set('vehicles.' + k, f.vehicles[k]);
    });
    ['new', 'dispatched', 'accepted', 'arrived'].forEach(function (s) {
      set('incidents.' + s, f.incidents.open[s]);
    });
    set('incidents.today', f.incidents.created_today);
    set('incidents.cleared_today', f.incidents.cleared_today);
    set('coverage.pct', f.coverage.pct === null ? '—' : f.coverage.pct.toFixed(1) + ' %');
    set('coverage.grids',
        f.coverage.layout ? f.coverage.grids_patrolled + ' / ' + f.coverage.grids : '—');
    set('refused.devices', f.refused.devices);
    set('refused.fixes', f.refused.fixes);
    var stamp = document.getElementById('gp-updated');
    if (stamp) { stamp.textContent = new Date().toLocaleTimeString('zh-CN', {hour12: false}); }
  }

  function refresh() {
    if (document.hidden) { return; }
    fetch('/api/v1/summary', {credentials: 'same-origin', headers: {Accept: 'application/json'}})
      .then(function (r) { if (!r.ok) { throw new Error('HTTP ' + r.status); } return r.json(); })
      .then(show)
      .catch(function () { /* keep the last figures; the next round tries again */ });
  }

  setInterval(refresh, REFRESH_MS);
  document.addEventListener('visibilitychange', refresh);
}());
