// Keyboard shortcuts of the review forms, and the bars of the progress page. No
// framework, no build step. 1-9 pick the n-th choice of the current question (the one
// holding focus, else the first still unanswered) and move on to the next open one;
// Ctrl/Cmd+Enter submits the form.
(function () {
  "use strict";
  document.querySelectorAll(".bar[data-width]").forEach(function (bar) {
    bar.style.width = (Number(bar.dataset.width) * 1.5) + "px";
  });
  var form = document.getElementById("answer-form");
  if (!form) { return; }
  var sets = Array.prototype.slice.call(form.querySelectorAll("fieldset.field"));
  function answered(set) { return !!set.querySelector("input[type=radio]:checked"); }
  function radios(set) { return set.querySelectorAll("input[type=radio]"); }
  function current() {
    var focused = document.activeElement && document.activeElement.closest("fieldset.field");
    if (focused && radios(focused).length) { return focused; }
    return sets.filter(function (s) { return radios(s).length && !answered(s); })[0] || null;
  }
  function mark() {
    var c = current();
    sets.forEach(function (s) { s.classList.toggle("current", s === c); });
  }
  form.addEventListener("change", mark);
  form.addEventListener("focusin", mark);
  mark();
  document.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") {
      e.preventDefault();
      if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
      return;
    }
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type !== "radio"))) { return; }
    if (!/^[1-9]$/.test(e.key)) { return; }
    var set = current();
    if (!set) { return; }
    var option = radios(set)[Number(e.key) - 1];
    if (!option) { return; }
    e.preventDefault();
    option.checked = true;
    // on to the next question still open, so a form of choices is a few key presses
    var after = sets.slice(sets.indexOf(set) + 1).filter(function (s) {
      return radios(s).length && !answered(s);
    })[0];
    (after ? radios(after)[0] : option).focus();
    mark();
  });
})();
