// Keeps /admin/charts live: every 5 s, fetch the charts fragment for the
// page's window and swap it in. No library; served as a static file so
// the page needs no inline script.
(function () {
  const box = document.getElementById('charts');
  if (!box) return;
  const url = '/admin/charts/fragment?window=' + encodeURIComponent(box.dataset.window || '1h');
  async function refresh() {
    try {
      const r = await fetch(url, {credentials: 'same-origin'});
      if (r.status === 401) { location.reload(); return; }
      if (!r.ok) return;
      box.innerHTML = await r.text();
      box.dataset.updated = String(Date.now());
    } catch (e) { /* keep the last charts */ }
  }
  setInterval(refresh, 5000);
})();
