// Show or hide the segmentation outline drawn over the case image (viewer.js places it).
(function () {
  "use strict";
  var toggle = document.getElementById("show-outlines");
  var outlines = document.getElementById("outlines");
  if (toggle && outlines) {
    toggle.addEventListener("change", function () {
      outlines.classList.toggle("hidden", !toggle.checked);
    });
  }
})();
