// allot web UI: counts down the "expires in" cells and counts up the
// "waited" cells once a second, and reloads the page when the server
// ends its session. Everything else is server-rendered; htmx
// fetches regions again when the server says they changed.
(function () {
  "use strict";
  function human(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + "m " + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(m / 60) + "h " + String(m % 60).padStart(2, "0") + "m";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-until]").forEach(function (el) {
      el.textContent = human(Number(el.getAttribute("data-until")) - now);
    });
    document.querySelectorAll("[data-since]").forEach(function (el) {
      el.textContent = human(now - Number(el.getAttribute("data-since")));
    });
  }
  setInterval(tick, 1000);
  // The server ends a page's live stream with a "logout" event when the
  // session ends (logout, its key revoked): the stream closes (sse-close)
  // and the page loads again, which lands on the login page.
  document.body.addEventListener("htmx:sseClose", function (e) {
    if (e.detail && e.detail.type === "message") {
      window.location.reload();
    }
  });
})();
