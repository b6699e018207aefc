// The thumbnail size control: grid column width and the `sizes` hint that lets the browser
// fetch the large thumbnail (srcset) once the small one would be blurry; kept per browser.
// Placeholders: a thumbnail keeps its framed placeholder until it has loaded (or failed).
// `window.mammosearchThumbnails.start()` runs both again on results swapped in by search.js.
(function () {
  "use strict";
  var KEY = "mammosearch.thumbnailPx";

  function apply(sizePx) {
    var label = document.getElementById("thumb-size-value");
    document.documentElement.style.setProperty("--thumb-px", sizePx + "px");
    Array.prototype.forEach.call(document.querySelectorAll("img[srcset]"), function (img) {
      img.sizes = sizePx + "px";
    });
    if (label) { label.textContent = sizePx + " px"; }
  }

  function startSizeControl() {
    var input = document.getElementById("thumb-size");
    if (!input || input.dataset.started) { return; }
    input.dataset.started = "1";
    var stored = null;
    try { stored = window.localStorage.getItem(KEY); } catch (error) { stored = null; }
    if (stored && +stored >= +input.min && +stored <= +input.max) { input.value = stored; }
    apply(+input.value);
    input.addEventListener("input", function () {
      apply(+input.value);
      try { window.localStorage.setItem(KEY, input.value); } catch (error) { /* private mode */ }
    });
  }

  function settle(img) {
    if (img.complete) { img.classList.add(img.naturalWidth ? "loaded" : "broken"); return; }
    img.addEventListener("load", function () { img.classList.add("loaded"); }, { once: true });
    img.addEventListener("error", function () { img.classList.add("broken"); }, { once: true });
  }

  function start() {
    startSizeControl();
    Array.prototype.forEach.call(document.querySelectorAll(".result img, img.thumb"), settle);
  }

  window.mammosearchThumbnails = { start: start };
  start();
})();
