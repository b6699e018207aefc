// Zoom the case image (and its outline overlay, which scales with it) and toggle the outline.
(function () {
  "use strict";
  var zoom = document.getElementById("zoom");
  var box = document.getElementById("zoom-box");
  var label = document.getElementById("zoom-value");
  if (zoom && box) {
    zoom.addEventListener("input", function () {
      box.style.width = zoom.value + "%";
      if (label) { label.textContent = zoom.value + "%"; }
    });
  }
  var toggle = document.getElementById("show-outlines");
  var outlines = document.getElementById("outlines");
  if (toggle && outlines) {
    toggle.addEventListener("change", function () {
      outlines.classList.toggle("hidden", !toggle.checked);
    });
  }
})();
