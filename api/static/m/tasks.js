/* GridPatrol phone page, tab 任务 Tasks: incidents a dispatcher assigned to me. Accept, arrived,
 * done (with a note and an optional photo) drive the same dispatch workflow as the console;
 * they need the network (a wrong step, e.g. a task cancelled meanwhile, answers 409 and the
 * list is reloaded). The list is polled while the page is open.
 */
(function () {
  'use strict';

  var M = window.GPM;
  var esc = M.esc;
  var tab = M.tabs.tasks = {rows: [], photo: {}};
  var NEXT = {dispatched: ['accept', '接受任务 Accept'], accepted: ['arrived', '已到场 Arrived'],
              arrived: ['done', '办结 Done']};

  function render() {
    var list = M.$('m-tasks');
    list.innerHTML = tab.rows.map(function (t) {
      var next = NEXT[t.status];
      var done = t.status === 'arrived';
      return '<li class="m-task m-st-' + esc(t.status) + '" data-id="' + esc(t.id) + '"><b>#' +
        esc(t.id) + ' ' + esc(t.kind) + '</b> · <span class="m-status">' +
        esc(M.STATUS[t.status] || t.status) + '</span><br><small>' +
        esc(t.description || '') + (t.grid_code ? ' · 网格 ' + esc(t.grid_code) : '') +
        (t.village_name ? ' · ' + esc(t.village_name) : '') + ' · ' +
        esc(M.time(t.created_at)) + '</small>' +
        (done ? '<label>处置情况 <small>What was done</small><textarea class="m-task-note" ' +
          'maxlength="2000" rows="3"></textarea></label><label>照片 <small>Photo (optional)' +
          '</small><input type="file" class="m-task-photo" accept="image/*"></label>' : '') +
        (next ? '<button type="button" class="m-primary m-task-act" data-act="' + next[0] +
          '">' + next[1] + '</button>' : '') +
        '<div class="m-error m-task-error" role="alert" hidden></div></li>';
    }).join('') || '<li class="m-empty">暂无任务 no task for you</li>';
  }

  function act(li, action) {
    var id = li.getAttribute('data-id');
    var box = li.querySelector('.m-task-error');
    var say = function (text) { box.hidden = !text; box.textContent = text || ''; };
    if (!navigator.onLine) {
      say('离线：联网后再操作 offline: do this when the signal returns');
      return Promise.resolve();
    }
    var url = M.API + '/tasks/' + encodeURIComponent(id) + '/' + action;
    var sending;
    if (action === 'done') {
      var note = li.querySelector('.m-task-note').value.trim();
      if (!note) { say('请填写处置情况 write what was done'); return Promise.resolve(); }
      var form = new FormData();
      form.append('note', note);
      var file = li.querySelector('.m-task-photo').files[0];
      sending = (file ? M.resizePhoto(file).then(function (p) {
        form.append('photo', p.blob, p.name);
      }) : Promise.resolve()).then(function () {
        return M.send(url, {method: 'POST', form: form});
      });
    } else {
      sending = M.send(url, {method: 'POST', json: {}});
    }
    li.querySelector('.m-task-act').disabled = true;
    return sending.then(function () {
      M.say('已更新任务 task updated · #' + id, 'ok');
      return tab.poll(true);
    }, function (err) {
      say(M.errorText(err));
      var b = li.querySelector('.m-task-act');
      if (b) { b.disabled = false; }
      if (err.status === 409) { return tab.poll(true); }
      return undefined;
    });
  }

  /* the list again; a note being written (or a photo chosen) is not thrown away by a timer */
  tab.poll = function (force) {
    if (!navigator.onLine) { return Promise.resolve(); }
    var el = document.activeElement;
    var typing = el && el.closest && el.closest('#m-tasks') &&
      (el.tagName === 'TEXTAREA' || el.tagName === 'INPUT');
    var chosen = Array.prototype.some.call(document.querySelectorAll('#m-tasks .m-task-photo'),
                                           function (i) { return i.files && i.files.length; });
    if (!force && (typing || chosen)) { return Promise.resolve(); }
    return M.send(M.API + '/tasks').then(function (r) {
      tab.rows = Array.isArray(r.body) ? r.body : (r.body && r.body.tasks) || [];
      tab.loads = (tab.loads || 0) + 1;
      render();
      var open = tab.rows.filter(function (t) { return NEXT[t.status]; }).length;
      var label = M.$('m-tab-tasks');
      label.setAttribute('data-count', open ? String(open) : '');
    }).catch(function () { return null; });
  };
  tab.refresh = function () { return tab.poll(true); };

  tab.start = function () {
    M.$('m-tasks').addEventListener('click', function (e) {
      var t = e.target;
      if (t && t.classList.contains('m-task-act')) {
        act(t.closest('.m-task'), t.getAttribute('data-act'));
      }
    });
    tab.poll();
  };

  tab.show = function () { tab.poll(true); };
}());
