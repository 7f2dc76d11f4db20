// Drop zones for the form's image and video inputs: a file dropped or chosen, or a pasted
// link, is sent to the studio at once and comes back as a preview holding its id, so it
// survives a re-rendered form. htmx cannot read dropped files, hence this small script.
(function () {
  function csrf() {
    var m = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function send(zone, body) {
    var error = zone.querySelector("[data-zone-error]");
    var held = zone.querySelector("[data-zone-held]");
    error.textContent = "";
    zone.classList.add("dropzone--busy");
    body.append("field", zone.dataset.field);
    return fetch(zone.dataset.url, { method: "POST", body: body, headers: { "X-CSRFToken": csrf() }, credentials: "same-origin" })
      .then(function (r) { return r.text().then(function (t) { return { ok: r.ok, text: t }; }); })
      .then(function (res) {
        if (!res.ok) { error.textContent = res.text; return; }
        if (zone.dataset.multiple !== "true") { held.innerHTML = ""; }
        held.insertAdjacentHTML("beforeend", res.text);
        // A video's card polls itself while the worker prepares it: let htmx see it.
        if (window.htmx) { window.htmx.process(held); }
        if (zone.dataset.multiple !== "true") { zone.classList.add("dropzone--filled"); }
        if (zone.dataset.clears) {
          var other = document.querySelector(zone.dataset.clears);
          if (other) { other.value = ""; }
        }
        zone.dispatchEvent(new CustomEvent("studio:input-held", { bubbles: true }));
      })
      .catch(function () { error.textContent = "The file could not be sent. Check your connection and try again."; })
      .finally(function () { zone.classList.remove("dropzone--busy"); });
  }

  function sendFiles(zone, files) {
    Array.prototype.forEach.call(files, function (file) {
      var body = new FormData();
      body.append("file", file);
      send(zone, body);
    });
  }

  document.addEventListener("dragover", function (e) {
    var zone = e.target.closest && e.target.closest("[data-dropzone]");
    if (zone) { e.preventDefault(); zone.classList.add("dropzone--over"); }
  });
  document.addEventListener("dragleave", function (e) {
    var zone = e.target.closest && e.target.closest("[data-dropzone]");
    if (zone) { zone.classList.remove("dropzone--over"); }
  });
  document.addEventListener("drop", function (e) {
    var zone = e.target.closest && e.target.closest("[data-dropzone]");
    if (!zone) { return; }
    e.preventDefault();
    zone.classList.remove("dropzone--over");
    if (e.dataTransfer.files.length) { sendFiles(zone, e.dataTransfer.files); return; }
    var url = e.dataTransfer.getData("text/uri-list") || e.dataTransfer.getData("text/plain");
    if (url) { var body = new FormData(); body.append("link", url.trim()); send(zone, body); }
  });
  document.addEventListener("change", function (e) {
    var zone = e.target.closest && e.target.closest("[data-dropzone]");
    if (zone && e.target.matches("input[type=file][data-zone-file]") && e.target.files.length) {
      sendFiles(zone, e.target.files);
      e.target.value = "";  // sent already: the form must not upload it a second time
    }
  });
  document.addEventListener("click", function (e) {
    var use = e.target.closest && e.target.closest("[data-zone-link-button]");
    if (use) {
      var zone = use.closest("[data-dropzone]");
      var input = zone.querySelector("[data-zone-link]");
      if (!input.value.trim()) { zone.querySelector("[data-zone-error]").textContent = "Paste a link first."; return; }
      var body = new FormData();
      body.append("link", input.value.trim());
      send(zone, body).then(function () { input.value = ""; });
      return;
    }
    var remove = e.target.closest && e.target.closest("[data-remove-held]");
    if (remove) {
      var zoneOf = remove.closest("[data-dropzone]");
      remove.closest("[data-held]").remove();
      if (zoneOf) { zoneOf.classList.remove("dropzone--filled"); zoneOf.dispatchEvent(new CustomEvent("studio:input-held", { bubbles: true })); }
    }
  });
  // A held input can change what the form says (the first frame's shape against the aspect
  // ratio): redraw the model's options, which keeps every held id.
  document.addEventListener("studio:input-held", function (e) {
    var model = e.target.closest("form") && e.target.closest("form").querySelector("select[name=model]");
    if (model && window.htmx) { window.htmx.trigger(model, "change"); }
  });
  document.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && e.target.matches && e.target.matches("[data-zone-link]")) {
      e.preventDefault();
      e.target.closest("[data-dropzone]").querySelector("[data-zone-link-button]").click();
    }
  });
})();
