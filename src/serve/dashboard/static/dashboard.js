// Live updates for the dashboard, served from the binary (no inline scripts: the pages' CSP
// allows scripts from this origin only). Without this file every page still works; a reload
// shows newer data. It listens to /events and, when a new run is recorded, fetches the same
// page again and swaps its <main> (also when the loop starts or finishes a run): the page
// updates without a reload.
'use strict';
(function () {
  if (!window.EventSource || !window.fetch || !window.DOMParser) return;
  var live = document.getElementById('live');
  var busy = document.getElementById('busy');
  var fetching = false;
  var again = false;
  function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    fetch(location.href, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, 'text/html');
        var fresh = doc.getElementById('main');
        var old = document.getElementById('main');
        if (fresh && old) old.replaceWith(document.adoptNode(fresh));
        document.body.setAttribute('data-newest-run', doc.body.getAttribute('data-newest-run') || '');
        var n = Number(document.body.getAttribute('data-live-updates') || '0') + 1;
        document.body.setAttribute('data-live-updates', String(n));
      })
      .catch(function () {})
      .then(function () {
        fetching = false;
        if (again) { again = false; refresh(); }
      });
  }
  var events = new EventSource('/events');
  events.addEventListener('open', function () { live.hidden = false; });
  events.addEventListener('error', function () { live.hidden = true; });
  events.addEventListener('busy', function (e) {
    var d = JSON.parse(e.data);
    busy.textContent = d.busy ? 'running: ' + d.busy : '';
    // Hosts of the branch being applied show as mid-rollout while it runs.
    refresh();
  });
  events.addEventListener('run', function (e) {
    var d = JSON.parse(e.data);
    if (d.id !== document.body.getAttribute('data-newest-run')) refresh();
  });
})();
