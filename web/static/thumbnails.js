// The thumbnail size control: grid column width and the `sizes` hint that lets the browser
// fetch the large thumbnail (srcset) once the small one would be blurry; kept per browser.
(function () {
  "use strict";
  var KEY = "mammosearch.thumbnailPx";
  var input = document.getElementById("thumb-size");
  var label = document.getElementById("thumb-size-value");

  function apply(sizePx) {
    document.documentElement.style.setProperty("--thumb-px", sizePx + "px");
    Array.prototype.forEach.call(document.querySelectorAll("img[srcset]"), function (img) {
      img.sizes = sizePx + "px";
    });
    if (label) { label.textContent = sizePx + " px"; }
  }

  var stored = null;
  try { stored = window.localStorage.getItem(KEY); } catch (error) { stored = null; }
  if (input) {
    if (stored && +stored >= +input.min && +stored <= +input.max) { input.value = stored; }
    apply(+input.value);
    input.addEventListener("input", function () {
      apply(+input.value);
      try { window.localStorage.setItem(KEY, input.value); } catch (error) { /* private mode */ }
    });
  }
})();

// Placeholders: a thumbnail keeps its framed placeholder until it has loaded (or failed).
(function () {
  "use strict";
  function settle(img) {
    if (img.complete) { img.classList.add(img.naturalWidth ? "loaded" : "broken"); return; }
    img.addEventListener("load", function () { img.classList.add("loaded"); }, { once: true });
    img.addEventListener("error", function () { img.classList.add("broken"); }, { once: true });
  }
  Array.prototype.forEach.call(document.querySelectorAll(".result img, img.thumb"), settle);
})();
