// The reports page: ask for a report (POST /api/v1/reports), follow its job's progress, then
// offer its file; refresh "my reports". Without this script the form still works as a plain
// GET of /reports/coverage (the server waits for the job and sends the file).
(function () {
  'use strict';
  var config = JSON.parse(document.getElementById('report-config').textContent);
  var form = document.getElementById('report-form');
  var box = document.getElementById('report-status');
  var step = document.getElementById('report-step');
  var bar = document.getElementById('report-progress');
  var result = document.getElementById('report-result');
  var button = form.querySelector('button[type=submit]');
  var POLL_MS = 700;
  var MAX_POLLS = 2000; // ≈ 25 minutes: a job that long has failed somewhere

  function text(el, value) { el.textContent = value; }

  function size(n) {
    if (n == null) return '';
    return n >= 1e6 ? (n / 1e6).toFixed(1) + ' MB' : Math.max(Math.round(n / 1e3), 1) + ' KB';
  }

  function detail(body, status) {
    if (body && typeof body.detail === 'string') return body.detail;
    if (body && Array.isArray(body.detail)) {
      return body.detail.map(function (d) {
        return (d.loc || []).slice(1).join('.') + ': ' + d.msg;
      }).join('; ');
    }
    return 'HTTP ' + status;
  }

  function fail(message) {
    bar.hidden = true;
    text(step, '失败 Failed');
    result.className = 'gp-error';
    text(result, message);
    button.disabled = false;
  }

  function done(job) {
    bar.value = 1;
    text(step, job.cached ? '已取用缓存 Served from the cache' : '完成 Done');
    result.className = '';
    result.textContent = '';
    var link = document.createElement('a');
    link.href = job.url;
    link.id = 'report-download';
    link.textContent = (job.format === 'html' ? '打开 Open ' : '下载 Download ') +
      job.format.toUpperCase() + ' · ' + (job.filename || '') + ' (' + size(job.size_bytes) + ')';
    if (job.format === 'html') link.target = '_blank';
    else link.setAttribute('download', job.filename || '');
    result.appendChild(link);
    if (job.note) {
      var note = document.createElement('p');
      note.className = 'gp-sub';
      note.textContent = job.note;
      result.appendChild(note);
    }
    button.disabled = false;
    refreshList();
  }

  function follow(job, polls) {
    if (job.status === 'done') return done(job);
    if (job.status === 'failed') return fail(job.error || 'failed');
    bar.hidden = false;
    bar.value = job.progress || 0;
    text(step, (job.status === 'queued' ? '排队中 Queued' : '生成中 Building') +
      (job.step ? ' · ' + job.step : '') + ' · ' + Math.round(100 * (job.progress || 0)) + ' %');
    if (polls > MAX_POLLS) return fail('超时 timed out: 请稍后在“我的报表”中查看 · see My reports later');
    setTimeout(function () {
      fetch('/api/v1/reports/' + job.id, {credentials: 'same-origin',
                                           headers: {Accept: 'application/json'}})
        .then(function (r) { return r.json().then(function (b) { return [r, b]; }); })
        .then(function (rb) {
          if (!rb[0].ok) return fail(detail(rb[1], rb[0].status));
          follow(rb[1], polls + 1);
        })
        .catch(function (e) { fail(String(e)); });
    }, POLL_MS);
  }

  function refreshList() {
    fetch('/api/v1/reports', {credentials: 'same-origin', headers: {Accept: 'application/json'}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (rows) {
        if (!rows) return;
        var body = document.querySelector('#report-list tbody');
        body.textContent = '';
        rows.forEach(function (job) {
          var tr = document.createElement('tr');
          [String(job.id), job.area || '全部 all', job.level, job.first + ' – ' + job.last,
           job.format.toUpperCase()].forEach(function (v) {
            var td = document.createElement('td');
            td.textContent = v;
            tr.appendChild(td);
          });
          var cell = document.createElement('td');
          if (job.url) {
            var a = document.createElement('a');
            a.href = job.url;
            a.textContent = '下载 Download';
            cell.appendChild(a);
            cell.appendChild(document.createTextNode(' ' + size(job.size_bytes)));
          } else {
            cell.textContent = job.status === 'failed' ? '失败 failed: ' + (job.error || '')
              : job.status + ' ' + Math.round(100 * job.progress) + ' %';
          }
          tr.appendChild(cell);
          body.appendChild(tr);
        });
      });
  }

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    var data = new FormData(form);
    var body = {};
    data.forEach(function (value, key) {
      value = String(value).trim();
      if (value === '') return;
      body[key] = key === 'layout' ? Number(value) : value;
    });
    box.hidden = false;
    bar.hidden = false;
    bar.value = 0;
    result.textContent = '';
    text(step, '提交中 Sending');
    button.disabled = true;
    fetch('/api/v1/reports', {
      method: 'POST',
      credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', Accept: 'application/json',
                'X-CSRF-Token': config.csrf},
      body: JSON.stringify(body)
    })
      .then(function (r) { return r.json().then(function (b) { return [r, b]; }); })
      .then(function (rb) {
        if (!rb[0].ok) return fail(detail(rb[1], rb[0].status));
        follow(rb[1], 0);
      })
      .catch(function (e) { fail(String(e)); });
  });
})();
