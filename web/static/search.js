// Search in place: the form is sent in the background and only the outcome below it is
// replaced, so the chosen file, k and filters stay; after a first search, changing k, the
// metric or a filter searches again with the same file. Without JavaScript the form posts.
// A search of an archived query has an address (the server answers the post with a redirect
// to /search?image_id=...): the address bar takes it, so back, bookmark and share work; back
// reloads the page at that address. The viewer is started again on the new results.
(function () {
  "use strict";
  var form = document.getElementById("search-form");
  var main = document.querySelector("main");
  if (!form || !main || !window.fetch || !window.FormData || !window.DOMParser) { return; }
  var searched = false;
  var pending = null;

  function replaceOutcome(html) {
    var page = new DOMParser().parseFromString(html, "text/html");
    var fresh = page.querySelector("main");
    if (!fresh) { return false; }
    var keep = document.getElementById("search-query");
    Array.prototype.slice.call(main.children).forEach(function (child) {
      if (child !== keep) { main.removeChild(child); }
    });
    Array.prototype.slice.call(fresh.children).forEach(function (child) {
      if (child.id === "search-query") { return; }
      var node = document.importNode(child, true);
      if (child.compareDocumentPosition(fresh.querySelector("#search-query")) &
          Node.DOCUMENT_POSITION_FOLLOWING) {
        main.insertBefore(node, keep);
      } else {
        main.appendChild(node);
      }
    });
    return true;
  }

  function search() {
    if (pending) { pending.abort(); }
    pending = window.AbortController ? new AbortController() : null;
    form.setAttribute("aria-busy", "true");
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      signal: pending ? pending.signal : undefined
    }).then(function (response) {
      var address = null;
      if (response.redirected) {
        var landed = new URL(response.url);
        if (landed.pathname !== new URL(form.action).pathname) {  // e.g. signed out: sign in
          window.location.assign(response.url);
          return null;
        }
        address = response.url;
      }
      return response.text().then(function (html) { return { html: html, address: address }; });
    }).then(function (outcome) {
      if (outcome === null) { return; }
      if (!replaceOutcome(outcome.html)) { form.submit(); return; }
      if (outcome.address && outcome.address !== window.location.href) {
        window.history.pushState({ mammosearch: true }, "", outcome.address);
      }
      if (window.mammosearchViewer) { window.mammosearchViewer.start(); }
      if (window.mammosearchThumbnails) { window.mammosearchThumbnails.start(); }
      searched = true;
      form.removeAttribute("aria-busy");
    }).catch(function (error) {
      if (error && error.name === "AbortError") { return; }
      form.submit();  // the server's own page says what went wrong
    });
  }

  window.addEventListener("popstate", function () { window.location.reload(); });

  // Drag and drop: 1-4 files (the views of one breast) dropped on the query box become the
  // file input's files, as if chosen with it.
  var fileInput = document.getElementById("image");
  var dropZone = fileInput && fileInput.closest("fieldset");
  if (dropZone && window.DataTransfer) {
    ["dragenter", "dragover"].forEach(function (name) {
      dropZone.addEventListener(name, function (event) {
        event.preventDefault();
        dropZone.classList.add("dropping");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      dropZone.addEventListener(name, function () { dropZone.classList.remove("dropping"); });
    });
    dropZone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (!event.dataTransfer || !event.dataTransfer.files.length) { return; }
      fileInput.files = event.dataTransfer.files;
      fileInput.dispatchEvent(new Event("input", { bubbles: true }));
      fileInput.dispatchEvent(new Event("change", { bubbles: true }));
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    search();
  });
  // A new query replaces the archived case the page was opened with (hidden fields).
  function dropCaseQuery() {
    Array.prototype.forEach.call(form.querySelectorAll(
      'input[type="hidden"][name="case_id"], input[type="hidden"][name="patient_id"],' +
      ' input[type="hidden"][name="breast"], input[type="hidden"][name="study_uid"]'),
      function (input) { input.parentNode.removeChild(input); });
  }
  form.addEventListener("input", function (event) {
    var name = event.target && event.target.name;
    if (name === "image" || name === "image_id") { dropCaseQuery(); }
  });

  form.addEventListener("change", function (event) {
    var name = event.target && event.target.name;
    if (searched && name && name !== "image" && name !== "image_id") { search(); }
  });
})();
