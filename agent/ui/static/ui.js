// pulsetrace ui: hover cards on the service map and auto-refresh of the health page.
// Plain JavaScript, no framework, no network access beyond reloading the page itself.
// Text from the store is only ever set with textContent, never parsed as HTML.
(function () {
  "use strict";

  function hovercards() {
    var card = document.getElementById("hovercard");
    var map = document.getElementById("map");
    if (!card || !map) { return; }
    function show(el, ev) {
      var d = el.dataset;
      var title = d.name ? d.name + " (" + d.type + ")" : (d.source + " \u2192 " + d.target);
      card.textContent = "";
      var b = document.createElement("b");
      b.textContent = title;
      card.appendChild(b);
      var lines = [
        d.requests + " requests \u00b7 " + d.rate,
        "errors " + d.errorPct + "% \u00b7 faults " + d.faultPct + "%",
        "p50 " + Number(d.p50).toFixed(1) + " ms \u00b7 p99 " + Number(d.p99).toFixed(1) + " ms",
        "click for the traces through it"
      ];
      lines.forEach(function (text) {
        var line = document.createElement("div");
        line.textContent = text;
        card.appendChild(line);
      });
      card.hidden = false;
      move(ev);
    }
    function move(ev) {
      card.style.left = Math.min(window.innerWidth - 380, ev.clientX + 14) + "px";
      card.style.top = (ev.clientY + 14) + "px";
    }
    map.querySelectorAll("g.node, g.edge").forEach(function (el) {
      el.addEventListener("mouseenter", function (ev) { show(el, ev); });
      el.addEventListener("mousemove", move);
      el.addEventListener("mouseleave", function () { card.hidden = true; });
    });
  }

  function autorefresh() {
    var seconds = Number(document.body.dataset.refresh || 0);
    var box = document.getElementById("autorefresh");
    if (!seconds || !box) { return; }
    var key = "pulsetrace-autorefresh";
    try { box.checked = window.localStorage.getItem(key) !== "off"; } catch (e) { /* storage may be off */ }
    box.addEventListener("change", function () {
      try { window.localStorage.setItem(key, box.checked ? "on" : "off"); } catch (e) { /* ignore */ }
    });
    window.setInterval(function () {
      if (box.checked && document.visibilityState === "visible") { window.location.reload(); }
    }, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    hovercards();
    autorefresh();
  });
}());
