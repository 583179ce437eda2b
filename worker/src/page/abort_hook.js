// Installed in every document before the site's own scripts (tab.rs): keeps a handle on
// each request the page makes with `fetch` or `XMLHttpRequest`, so that the worker can
// abort the page's answer stream on a site whose stop button it cannot find or that
// does nothing. The page's own abort (its signal, `xhr.abort()`) still works alongside.
(() => {
  // Bounded: the streams worth aborting are among the newest requests.
  const KEEP = 32;
  const remember = (set, item) => {
    set.add(item);
    if (set.size > KEEP) set.delete(set.values().next().value);
  };

  const fetch = window.fetch;
  const fetches = new Set();
  window.fetch = function (input, init) {
    const ours = new AbortController();
    remember(fetches, ours);
    const options = init || {};
    const theirs = options.signal || (input instanceof Request ? input.signal : null);
    const signal = theirs ? AbortSignal.any([theirs, ours.signal]) : ours.signal;
    return fetch.call(this, input, { ...options, signal });
  };

  // Sites that stream over XMLHttpRequest (DeepSeek's page does) are aborted through
  // the request object itself; one that has ended leaves the set on `loadend`.
  const XHR = XMLHttpRequest.prototype;
  const send = XHR.send;
  const xhrs = new Set();
  XHR.send = function (...args) {
    remember(xhrs, this);
    this.addEventListener("loadend", () => xhrs.delete(this), { once: true });
    return send.apply(this, args);
  };

  Object.defineProperty(window, "__prqAbortRequests", {
    value: () => {
      const n = fetches.size + xhrs.size;
      fetches.forEach((c) => c.abort());
      xhrs.forEach((x) => x.abort());
      fetches.clear();
      xhrs.clear();
      return n;
    },
  });
})();
