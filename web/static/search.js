// Search in place: the form is sent in the background and only the outcome below it is
// replaced, so the chosen file, k and filters stay; after a first search, changing k, the
// metric or a filter searches again with the same file. Without JavaScript the form posts.
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
      if (response.redirected) { window.location.assign(response.url); return null; }
      return response.text();
    }).then(function (html) {
      if (html === null) { return; }
      if (!replaceOutcome(html)) { form.submit(); return; }
      searched = true;
      form.removeAttribute("aria-busy");
    }).catch(function (error) {
      if (error && error.name === "AbortError") { return; }
      form.submit();  // the server's own page says what went wrong
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    search();
  });
  form.addEventListener("change", function (event) {
    var name = event.target && event.target.name;
    if (searched && name && name !== "image" && name !== "image_id") { search(); }
  });
})();
