// Copy buttons for the enrollment page. The values are already on the page; this only copies
// them to the clipboard (or selects them where the clipboard is not available).
"use strict";
(function () {
  const status = document.querySelector(".status");
  function say(text) {
    if (status) status.textContent = text;
  }
  function select(el) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
  document.querySelectorAll("button.copy").forEach(function (button) {
    const target = document.getElementById(button.dataset.copy);
    if (!target) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      const text = target.textContent;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(
          function () { say("Kopiert / Copied"); },
          function () { select(target); say("Markiert – bitte kopieren / Selected – please copy"); }
        );
      } else {
        select(target);
        say("Markiert – bitte kopieren / Selected – please copy");
      }
    });
  });
})();
