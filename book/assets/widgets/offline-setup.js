/* Lets the stored ipywidgets state render from the book's local files, with no network.
 *
 * 1. The widget bundle (embed-amd.js) defines named RequireJS modules and finds its fonts next to the URL that
 *    RequireJS gives each module. Without a mapping that URL is relative to the page
 *    (notebooks/@jupyter-widgets/...), which does not exist; map every @jupyter-widgets module to this folder.
 * 2. The widget bundle typesets LaTeX labels with the MathJax 2 call MathJax.Hub.Queue(["Typeset", Hub, el]);
 *    the book loads MathJax 3, which has no Hub. Give whatever object window.MathJax holds (the configuration,
 *    then MathJax 3 itself) a non-enumerable Hub whose Queue forwards to MathJax 3's typesetPromise.
 * 3. The theme's Font Awesome replaces every <i class="fa ..."> with an <svg>. The Play widget then looks for
 *    its <i> to switch between play and pause, throws, and the exception stops the jslinks from reaching the
 *    frames. Give PlayView an updatePlaying that puts a fresh <i> in the button (Font Awesome converts it).
 * Loaded after require.js and before embed-amd.js (nb_ipywidgets_js in _config.yml).
 */
(function () {
  "use strict";
  var here = new URL(".", document.currentScript.src).href.replace(/\/$/, "");
  window.require.config({
    paths: { "@jupyter-widgets": here, "@jupyter-widgets/html-manager/dist": here },
  });

  var hub = {
    Queue: function (job) {
      var element = Array.isArray(job) ? job[2] : undefined;
      var mathjax = window.MathJax;
      if (mathjax && mathjax.startup && mathjax.startup.promise) {
        mathjax.startup.promise.then(function () {
          return mathjax.typesetPromise(element ? [element] : undefined);
        });
      }
    },
  };
  function withHub(value) {
    if (value && typeof value === "object" && !Object.prototype.hasOwnProperty.call(value, "Hub")) {
      Object.defineProperty(value, "Hub", { value: hub, enumerable: false, configurable: true });
    }
    return value;
  }
  var current = withHub(window.MathJax);
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    enumerable: true,
    get: function () { return current; },
    set: function (value) { current = withHub(value); },
  });

  function fixPlayIcon(controls) {
    var proto = controls && controls.PlayView && controls.PlayView.prototype;
    if (!proto) return;
    proto.updatePlaying = function () {
      var icon = document.createElement("i");
      icon.className = this.model.get("playing") ? "fa fa-pause" : "fa fa-play";
      this.playPauseButton.replaceChildren(icon);
    };
  }
  // by DOMContentLoaded embed-amd.js has defined the modules; the widgets render later, on "load"
  document.addEventListener("DOMContentLoaded", function () {
    window.require(["@jupyter-widgets/controls"], fixPlayIcon);
  });
})();
