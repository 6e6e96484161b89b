/* GridPatrol phone page (网格员): who is signed in, the tabs, the network state, the outbox count.
 *
 * The shell is the same for everyone (the service worker keeps it); GET /api/v1/m/me says who
 * is signed in (the HTTP-only cookie) and gives the CSRF value for writes. Without a worker's
 * session the sign-in form shows; offline, the last /me kept on the phone opens the tabs.
 * Each tab is a module (grid.js, patrol.js, report.js, tasks.js) registered in GPM.tabs with
 * start(me), show(), refresh() and, for those that follow the server's changes, poll().
 */
(function () {
  'use strict';

  var M = window.GPM = window.GPM || {};
  var GP = window.GP;
  var API = M.API = '/api/v1/m';
  var POLL_MS = 15000;
  M.tabs = M.tabs || {};
  M.state = {tab: null, started: false, online: navigator.onLine, polls: 0, ended: false};
  var pollTimer = null;

  M.$ = function (id) { return document.getElementById(id); };
  M.esc = GP.esc;
  M.STATUS = {
    new: '待处理 new', dispatched: '已派警 dispatched', accepted: '已接受 accepted',
    arrived: '已到场 arrived', cleared: '已办结 cleared', cancelled: '已撤销 cancelled'
  };
  M.LEVELS = {grid: '网格预警 grid warning', village: '嘎查村 village',
              township: '苏木乡镇 township', county: '旗县 county'};

  /* a stored time (ISO, UTC) in China's time, 'YYYY-MM-DD HH:MM' */
  M.time = function (iso) {
    var t = iso ? Date.parse(iso) : NaN;
    if (isNaN(t)) { return '–'; }
    return new Date(t + 8 * 3600 * 1000).toISOString().replace('T', ' ').substring(0, 16);
  };

  M.show = function (el, on) {
    var node = typeof el === 'string' ? M.$(el) : el;
    if (node) { node.hidden = !on; }
  };

  /* a line for the worker at the top of the tabs: kind 'ok', 'error' or 'note' */
  M.say = function (text, kind) {
    var box = M.$('m-message');
    box.textContent = text || '';
    box.className = 'm-message' + (text ? ' m-' + (kind || 'note') : '');
  };

  M.errorText = function (err) {
    if (!err) { return ''; }
    if (err.zh) { return err.zh + ' ' + err.en; }
    if (err.kind === 'network') { return '无网络连接 no network connection'; }
    if (err.status === 404) { return '未找到或不属于您 not found, or not yours: ' + err.detail; }
    if (err.status === 409) { return '状态已变化，请刷新 the state moved on; refresh: ' + err.detail; }
    if (err.status === 413) { return '内容过大 too large: ' + err.detail; }
    return (err.status ? err.status + ' · ' : '') + (err.detail || err.message);
  };

  /* ---- tabs ----------------------------------------------------------------------------- */
  M.select = function (name) {
    if (!M.tabs[name]) { name = 'grid'; }
    M.state.tab = name;
    Array.prototype.forEach.call(document.querySelectorAll('.m-tab'), function (b) {
      var on = b.getAttribute('data-tab') === name;
      b.setAttribute('aria-selected', on ? 'true' : 'false');
      b.classList.toggle('m-current', on);
    });
    Array.prototype.forEach.call(document.querySelectorAll('.m-pane'), function (p) {
      p.hidden = p.id !== 'm-pane-' + name;
    });
    if (history.replaceState) {
      history.replaceState(null, '', location.pathname + location.search + '#' + name);
    }
    if (M.tabs[name].show) { M.tabs[name].show(); }
  };

  /* ---- network and outbox state ----------------------------------------------------------- */
  function netChanged() {
    M.state.online = navigator.onLine;
    var net = M.$('m-net');
    net.innerHTML = M.state.online ? '在线 <small>online</small>' : '离线 <small>offline</small>';
    net.className = 'm-net ' + (M.state.online ? 'm-online' : 'm-offline');
    document.body.classList.toggle('m-is-offline', !M.state.online);
  }

  var pendingRender = false;
  M.changed = function () {
    if (pendingRender) { return; }
    pendingRender = true;
    setTimeout(function () {
      pendingRender = false;
      if (!M.me) { return; }
      M.pending().then(function (p) {
        M.state.queued = {reports: p.reports.length, fixes: p.fixes.length};
        var waiting = p.reports.filter(function (r) { return r.state === 'queued'; }).length;
        var box = M.$('m-queue');
        box.hidden = !(waiting || p.fixes.length);
        box.textContent = '待发送 queued: ' + (waiting ? waiting + ' 上报 report(s) ' : '') +
          (p.fixes.length ? p.fixes.length + ' 定位 fixes' : '');
        Object.keys(M.tabs).forEach(function (k) {
          if (M.tabs[k].pending) { M.tabs[k].pending(p); }
        });
      });
    }, 50);
  };

  M.sentReport = function (item, answer) {
    M.say('上报已送达 report delivered · #' + answer.id, 'ok');
    if (M.tabs.report && M.tabs.report.refresh) { M.tabs.report.refresh(); }
  };

  /* what the phone kept of the signed-in worker's data (the service worker's copies of the
     API's answers, the last /me) goes: it is not for the next one to see. The service worker
     is told first (it then keeps no answer to a request made before), then the cache goes
     here too (no service worker yet, or it did not answer in time). */
  function forgetData() {
    var told = Promise.resolve();
    var sw = navigator.serviceWorker && navigator.serviceWorker.controller;
    if (sw && window.MessageChannel) {
      told = new Promise(function (resolve) {
        var channel = new MessageChannel();
        channel.port1.onmessage = function () { resolve(); };
        setTimeout(resolve, 2000);
        sw.postMessage('forget-data', [channel.port2]);
      });
    }
    return told.then(function () {
      return Promise.all([window.caches ? caches.delete('gp-m-data') : null,
                          M.db.del('kv', 'me')]);
    }).catch(function () { return null; });
  }

  /* no one is signed in any more: no polling, no position followed, nothing of the worker's
     shown or kept; how: 'signout' (the button) or 'ended' (the server answered 401) */
  function signedOut(how) {
    M.state.ended = true;
    M.me = null;
    window.GP_CONFIG.csrf = '';
    if (pollTimer !== null) { clearInterval(pollTimer); pollTimer = null; }
    M.show('m-queue', false);
    var stopped = Object.keys(M.tabs).map(function (k) {
      return M.tabs[k].signedOut ? M.tabs[k].signedOut(how) : null;
    });
    return Promise.all(stopped).catch(function () { return null; });
  }

  /* a 401 from the API (the session expired, was revoked, or signed out elsewhere) */
  M.onSignedOut = function (err) {
    var was = !!M.me;
    if (!was && M.state.forgetting) { return M.state.forgetting; }
    signedOut('ended');
    showSignin(err && err.status === 403 ? err : null);
    if (was && !(err && err.status === 403)) {
      var note = M.$('m-signin-note');
      note.hidden = false;
      note.textContent = '登录已失效，请重新登录；未发送的内容保留在手机上。 Your session has ' +
        'ended: sign in again. What is unsent stays on the phone.';
    }
    var forgetting = M.state.forgetting = forgetData().then(function () {
      if (M.state.forgetting === forgetting) { M.state.forgetting = null; }
    });
    return forgetting;
  };

  /* ---- who is signed in ------------------------------------------------------------------ */
  function showSignin(err) {
    M.show('m-app', false);
    M.show('m-signin', true);
    M.show('m-signout', false);
    M.$('m-who').textContent = '';
    var note = M.$('m-signin-note');
    if (err && err.status === 403 && note) {
      note.hidden = false;
      note.textContent = '此页面仅供网格员使用，请用网格员的手机号登录。 This page is for grid ' +
        'workers: sign in with a grid worker\'s phone number.';
    }
  }

  function startApp(me, offline) {
    M.me = me;
    window.GP_CONFIG.csrf = me.csrf;
    M.show('m-signin', false);
    M.show('m-app', true);
    M.show('m-signout', true);
    document.querySelector('#m-signout input[name=csrf]').value = me.csrf || '';
    M.$('m-who').textContent = me.name + ' · ' + (me.village_name || me.village_code || '');
    if (offline) {
      M.say('离线：显示手机上保存的数据 offline: showing what the phone kept', 'note');
    }
    if (M.state.started && M.state.ended) {
      location.reload();  // signed in again after a session ended here: start afresh
      return;
    }
    if (!M.state.started) {
      M.state.started = true;
      Object.keys(M.tabs).forEach(function (k) { M.tabs[k].start(me); });
      pollTimer = setInterval(poll, POLL_MS);
    }
    M.show('m-password-card', me.has_password === false);
    M.select((location.hash || '').replace('#', '') || 'grid');
    M.flushSoon();
    M.changed();
  }

  function poll() {
    if (!M.me || !navigator.onLine || document.hidden) { return; }
    M.state.polls += 1;
    M.flushSoon();
    Object.keys(M.tabs).forEach(function (k) {
      if (M.tabs[k].poll) { M.tabs[k].poll(); }
    });
  }
  M.poll = poll;

  M.loadMe = function () {
    return M.send(API + '/me').then(function (r) {
      if (M.state.forgetting) {  // a session ended meanwhile: who is it now?
        return M.state.forgetting.then(function () { return M.loadMe(); });
      }
      return M.db.put('kv', r.body, 'me').catch(function () { return null; }).then(function () {
        startApp(r.body, !!r.offline);
      });
    }, function (err) {
      if (err.kind === 'auth') {  // 401 (no session: M.send forgets) or 403 (not a worker's)
        if (err.status !== 401) { M.onSignedOut(err); }
        showSignin(err);
        return null;
      }
      if (err.kind === 'refused') { showSignin(err); return null; }
      return M.db.get('kv', 'me').then(function (me) {
        if (me) { startApp(me, true); } else { showSignin(err); }
      }, function () { showSignin(err); });
    });
  };

  /* ---- the sign-in form: password or one-time code ------------------------------------------ */
  function wireSignin() {
    var form = M.$('m-signin-form');
    var how = function () {
      var chosen = form.querySelector('input[name=how]:checked');
      return chosen ? chosen.value : 'password';
    };
    var toggle = function () {
      var code = how() === 'code';
      M.show('m-password-row', !code);
      M.show('m-code-row', code);
      M.$('m-password').required = !code;
      M.$('m-code').required = code;
    };
    form.addEventListener('change', toggle);
    form.addEventListener('submit', function () {
      // send only the chosen secret
      (how() === 'code' ? M.$('m-password') : M.$('m-code')).disabled = true;
    });
    toggle();
    var out = M.$('m-signout');
    out.addEventListener('submit', function (e) {
      if (out.getAttribute('data-forgot')) { return; }
      e.preventDefault();
      if (out.getAttribute('data-leaving')) { return; }
      out.setAttribute('data-leaving', '1');
      // the patrol ends (its stop waits on the phone under this worker; sent now if the signal
      // allows, in a few seconds at most); what the phone kept of this worker is not for the
      // next one to see; then sign out
      var me = M.me;
      var stopped = M.tabs.patrol && M.tabs.patrol.signedOut && me
        ? M.tabs.patrol.signedOut('signout') : Promise.resolve();
      stopped.then(function () {
        if (!me || !navigator.onLine) { return null; }
        return Promise.race([M.flushSoon(), new Promise(function (resolve) {
          setTimeout(resolve, 3000);
        })]);
      }).catch(function () { return null; }).then(function () {
        return signedOut('signout');
      }).then(forgetData).then(function () {
        out.setAttribute('data-forgot', '1');
        out.submit();
      });
    });
  }

  /* signed in with a one-time code: the worker sets a password for next time */
  function wirePassword() {
    var form = M.$('m-password-form');
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var first = form.password.value, again = form.again.value;
      var box = M.$('m-password-error');
      var fail = function (text) { box.hidden = false; box.textContent = text; };
      if (first.length < 8) { fail('密码至少 8 位 at least 8 characters'); return; }
      if (first !== again) { fail('两次输入不一致 the two entries differ'); return; }
      box.hidden = true;
      M.send(M.API + '/password', {method: 'PUT', json: {password: first}}).then(function () {
        M.me.has_password = true;
        M.show('m-password-card', false);
        M.say('密码已设置，下次可用密码登录 password set: sign in with it next time', 'ok');
      }, function (err) { fail(M.errorText(err)); });
    });
  }

  function registerWorker() {
    if (!('serviceWorker' in navigator)) { return; }
    navigator.serviceWorker.register('/m/sw.js', {scope: '/m/'}).then(function () {
      M.state.serviceWorker = 'registered';
    }).catch(function (err) { M.state.serviceWorker = 'failed: ' + err.message; });
    navigator.serviceWorker.addEventListener('controllerchange', function () {
      M.state.serviceWorker = 'controlling';
      // what was fetched before the worker took over is fetched again, so that it keeps it
      if (M.me && M.tabs.grid && M.tabs.grid.refresh) { M.tabs.grid.refresh(); }
    });
  }

  function boot() {
    M.cfg = JSON.parse(M.$('m-config').textContent);
    window.GP_CONFIG = {gcj02: !!M.cfg.gcj02, csrf: ''};
    Array.prototype.forEach.call(document.querySelectorAll('.m-tab'), function (b) {
      b.addEventListener('click', function () { M.select(b.getAttribute('data-tab')); });
    });
    window.addEventListener('online', function () {
      netChanged();
      if (M.me) { M.flushSoon(); poll(); } else { M.loadMe(); }
    });
    window.addEventListener('offline', netChanged);
    netChanged();
    wireSignin();
    wirePassword();
    registerWorker();
    if (M.cfg.signinError) { showSignin(null); return; }
    M.loadMe();
  }

  document.addEventListener('DOMContentLoaded', boot);
}());
