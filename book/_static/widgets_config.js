// Loaded after vendor/require.js and before vendor/html-manager/embed-amd.js on pages with widgets
// (order set by nb_ipywidgets_js in _config.yml). The widget renderer derives the folder of its
// fonts from the AMD module URLs of @jupyter-widgets/html-manager; point those at the vendored copy
// so icon fonts load from this site instead of 404s next to the page.
(function () {
  var vendor = new URL('vendor/html-manager/', document.currentScript.src).href;
  window.__jupyter_widgets_assets_path__ = vendor;
  window.requirejs.config({
    paths: {
      '@jupyter-widgets/html-manager': vendor + 'index',
      '@jupyter-widgets/html-manager/dist': vendor.slice(0, -1),
    },
  });
})();
