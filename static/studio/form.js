// What the forms do beyond htmx: "Clear" for the prompt, the shape hint's "Switch to",
// focus where the creator needs it (the new card after Generate, the first field with an
// error otherwise), and the new card scrolled into view and highlighted for a moment.
// No inline script anywhere: the page's Content-Security-Policy forbids it.
(function () {
  var HIGHLIGHT_MS = 6000;

  // A select that changes the model's options asks the form to redraw them (the
  // #form-redraw element listens for "studio:redraw").
  document.addEventListener("change", function (e) {
    if (!e.target.matches || !e.target.matches("[data-redraw]")) { return; }
    var redraw = e.target.closest("#form-redraw");
    if (redraw && window.htmx) { window.htmx.trigger(redraw, "studio:redraw"); }
  });
  // A choice made while the options are being redrawn (a box ticked just after choosing a
  // model) would be lost: the new options carry the values sent with the redraw. So what
  // changes after a redraw is sent is kept here and applied again to the options it brings.
  var changedSince = {};
  document.addEventListener("htmx:beforeRequest", function (e) {
    if (e.detail && e.detail.elt && e.detail.elt.id === "form-redraw") { changedSince = {}; }
  });
  document.addEventListener("change", function (e) {
    var control = e.target;
    if (!control.name || !control.closest || !control.closest("#model-options") || control.matches("[data-redraw]")) { return; }
    changedSince[control.name] = control.type === "checkbox" ? { checked: control.checked } : { value: control.value };
  });

  function applyChangedSince(options) {
    Object.keys(changedSince).forEach(function (name) {
      var saved = changedSince[name];
      Array.prototype.forEach.call(options.querySelectorAll("[name]"), function (control) {
        if (control.name !== name) { return; }
        if ("checked" in saved && control.type === "checkbox") { control.checked = saved.checked; }
        else if (control.type === "radio") { control.checked = control.value === saved.value; }
        else if (control.tagName === "SELECT") {
          if (control.querySelector('option[value="' + CSS.escape(saved.value) + '"]')) { control.value = saved.value; }
        } else if ("value" in saved && control.type !== "file") { control.value = saved.value; }
      });
    });
    changedSince = {};
  }

  // Card id → when its highlight ends. Kept here because a card redraws itself every few
  // seconds (a new element each time), and the highlight must outlive those redraws.
  var highlighted = {};

  function reducedMotion() {
    return window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  }

  // Controls that only work with JavaScript are rendered hidden and shown here.
  function reveal(root) {
    if (!root.querySelectorAll) { return; }
    Array.prototype.forEach.call(root.querySelectorAll("[data-clear][hidden], [data-js-only][hidden]"), function (el) {
      el.hidden = false;
    });
  }

  function firstError(scope) {
    var invalid = scope.querySelector('[aria-invalid="true"]:not([type=hidden])');
    if (invalid) { return invalid; }
    var error = scope.querySelector(".field-errors, .form-errors");
    if (!error) { return null; }
    var holder = error.closest(".field");
    var control = holder && holder.querySelector("input:not([type=hidden]), select, textarea");
    return control || error;
  }

  function focusFirstError(scope) {
    var target = firstError(scope);
    if (!target) { return false; }
    if (!target.matches("input, select, textarea, button, a, [tabindex]")) { target.setAttribute("tabindex", "-1"); }
    target.focus({ preventScroll: true });
    target.scrollIntoView({ block: "center", behavior: reducedMotion() ? "auto" : "smooth" });
    return true;
  }

  function mark(card) {
    var until = highlighted[card.id];
    if (!until) { return; }
    var left = until - Date.now();
    if (left <= 0) { delete highlighted[card.id]; return; }
    card.classList.add("card--new");
    setTimeout(function () {
      var current = document.getElementById(card.id);
      if (current) { current.classList.remove("card--new"); }
    }, left);
  }

  function showNewCard(form) {
    var note = form.querySelector("[data-new-clip]");
    if (!note) { return; }
    var id = "clip-" + note.getAttribute("data-new-clip");
    highlighted[id] = Date.now() + HIGHLIGHT_MS;
    var card = document.getElementById(id);
    if (card) {
      mark(card);
      card.focus({ preventScroll: true });
      card.scrollIntoView({ block: "center", behavior: reducedMotion() ? "auto" : "smooth" });
    }
    // A live region inserted with its text already in it is not always read out: say it
    // again once it is in place.
    var html = note.innerHTML;
    note.innerHTML = "";
    setTimeout(function () { note.innerHTML = html; }, 150);
    document.dispatchEvent(new CustomEvent("studio:clip-queued", { detail: { id: id } }));
  }

  document.addEventListener("htmx:afterSettle", function (e) {
    var elt = e.target;
    if (!elt || elt.id !== "generate-form") { return; }
    var status = e.detail && e.detail.xhr ? e.detail.xhr.status : 200;
    if (status === 422) { focusFirstError(elt); } else { showNewCard(elt); }
  });

  // The key form of the Providers page swaps only its feedback (the key stays in the field,
  // never sent back): mark the field as the feedback says.
  document.addEventListener("htmx:afterSwap", function (e) {
    var box = e.target;
    if (!box || !box.matches || !box.matches("[data-key-feedback]")) { return; }
    var input = box.closest(".field").querySelector("input:not([type=hidden])");
    if (!input) { return; }
    if (box.querySelector(".field-errors")) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    } else {
      input.removeAttribute("aria-invalid");
    }
  });

  document.addEventListener("click", function (e) {
    var clear = e.target.closest && e.target.closest("[data-clear]");
    if (clear) {
      var field = document.querySelector(clear.getAttribute("data-clear"));
      if (field) {
        field.value = "";
        field.dispatchEvent(new Event("input", { bubbles: true }));
        field.focus();
      }
      return;
    }
    var ratio = e.target.closest && e.target.closest("[data-set-ratio]");
    if (ratio) {
      var select = document.getElementById("id_aspect_ratio");
      if (select) {
        select.value = ratio.getAttribute("data-set-ratio");
        // The form's one listener redraws the options on a change that bubbles to it.
        select.dispatchEvent(new Event("change", { bubbles: true }));
      }
    }
  });

  function onLoad(root) {
    reveal(root);
    if (root.id === "model-options") { applyChangedSince(root); }
    if (root.querySelectorAll) {
      Array.prototype.forEach.call(root.querySelectorAll("[data-card]"), mark);
    }
    if (root.matches && root.matches("[data-card]")) { mark(root); }
  }

  if (window.htmx) { window.htmx.onLoad(onLoad); }
  document.addEventListener("DOMContentLoaded", function () {
    reveal(document);
    // A page that comes back with errors (no JavaScript on the way there, or a full
    // reload): the first field that has one gets the focus.
    var form = document.querySelector("main form .field-errors, main form .form-errors");
    if (form) { focusFirstError(form.closest("form")); }
  });
})();
