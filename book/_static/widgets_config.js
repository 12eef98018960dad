// Loaded after vendor/require.js and before vendor/html-manager/embed-amd.js on pages with widgets
// (order set by nb_ipywidgets_js in _config.yml).
(function () {
  // The widget renderer derives the folder of its fonts from the AMD module URLs of
  // @jupyter-widgets/html-manager; point those at the vendored copy so icon fonts load from this
  // site instead of 404s next to the page.
  var vendor = new URL('vendor/html-manager/', document.currentScript.src).href;
  window.__jupyter_widgets_assets_path__ = vendor;
  window.requirejs.config({
    paths: {
      '@jupyter-widgets/html-manager': vendor + 'index',
      '@jupyter-widgets/html-manager/dist': vendor.slice(0, -1),
    },
  });
  // Widgets typeset their labels with the MathJax 2 call MathJax.Hub.Queue(['Typeset', Hub, el]);
  // the book loads MathJax 3, which has no Hub. Widgets render on window "load" (after the deferred
  // MathJax script ran); this listener is registered first, so the shim is in place by then.
  window.addEventListener('load', function () {
    var mathjax = window.MathJax;
    if (mathjax === undefined || mathjax.Hub !== undefined) return;
    mathjax.Hub = {
      Queue: function (command) {
        var ready = (mathjax.startup && mathjax.startup.promise) || Promise.resolve();
        ready.then(function () { return mathjax.typesetPromise([command[2]]); });
      },
    };
  });
})();
