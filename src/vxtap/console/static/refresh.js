// Fleet status: every element marked data-refresh="URL" is replaced every data-every
// seconds by the fragment the server renders at URL (the same template as the page's).
"use strict";
(function () {
  for (const region of document.querySelectorAll("[data-refresh]")) {
    const every = 1000 * Number(region.dataset.every || 5);
    async function refresh() {
      try {
        const response = await fetch(region.dataset.refresh, { credentials: "same-origin", cache: "no-store" });
        if (response.redirected || response.status === 401) { window.location = "/console/signin"; return; }
        if (!response.ok) { region.classList.add("stale"); return; }
        region.innerHTML = await response.text();
        region.classList.remove("stale");
        region.dataset.refreshed = String(Number(region.dataset.refreshed || 0) + 1);
      } catch (error) {
        region.classList.add("stale"); // server briefly away: try again next time
      }
    }
    setInterval(refresh, every);
  }
})();
