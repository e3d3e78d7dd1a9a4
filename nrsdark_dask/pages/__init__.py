"""Pages: the QA report, the science check and the trend site, from Jinja2 templates that
escape every value (issue 29).

Every value a page shows comes from a file header or a results database, which anyone can
write; none is trusted.  Three rules hold for every page this package renders:

* **Templates escape by default** (``autoescape=True`` on every template): a value reaches the
  markup only through ``{{ value }}``, HTML-escaped, or through the ``tojson`` filter inside a
  ``<script type="application/json">`` block.  No page markup is built with f-strings.
* **Only known scripts run.**  Each page carries a Content-Security-Policy ``<meta>`` whose
  ``script-src`` lists the SHA-256 of each script the page is meant to run (the inlined
  BokehJS, the plots' embedding script, the render check) and nothing else: no
  ``'unsafe-inline'``, so an injected ``<script>``, an ``on...=`` handler or a ``javascript:``
  link would not run even if a value escaped its escaping.  Images only from ``data:`` URLs,
  no network at all (``default-src 'none'``).
* **Names from data are mapped, never used as paths**: :func:`safe_name` turns any value into
  an allow-listed file name (with a short hash of the value when the mapping changed it), and
  :func:`write_page` writes it only inside the site's folder, atomically.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import jinja2
from markupsafe import Markup

from ..paths import atomic_write, inside

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("nrsdark_dask.pages", "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=True)

SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(value, suffix: str = "", limit: int = 80) -> str:
    """A file name for ``value`` (any string): letters, digits, ``.``, ``_`` and ``-`` only,
    no leading dot, at most ``limit`` characters before ``suffix``; when that changed the
    value, ``-`` and the first 8 hex digits of its SHA-256 are appended, so two values never
    share a name by the mapping.  ``safe_name("nrs1_nrsrapid_full", ".html")`` is
    ``nrs1_nrsrapid_full.html``; ``safe_name("../x")`` is ``x-<hash>``."""
    text = str(value)
    name = SAFE.sub("_", text).lstrip(".")[:limit] or "_"
    if name != text:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = f"{name}-{digest}"
    return name + suffix


def _sha256(js: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode() + "'"


def render(template: str, scripts=(), head_scripts=(), **context) -> str:
    """The page ``template`` rendered with ``context`` (every value escaped).  ``scripts``
    (end of the body) and ``head_scripts`` (in the head) are trusted JavaScript sources, no
    tags: the page's Content-Security-Policy (``{{ csp }}`` in the template's head) allows
    exactly those and no other script."""
    scripts, head_scripts = list(scripts), list(head_scripts)
    for js in scripts + head_scripts:
        if re.search(r"</script", js, re.I):
            raise ValueError("a page script may not hold '</script'")
    allowed = " ".join(map(_sha256, head_scripts + scripts)) or "'none'"
    policy = (f"default-src 'none'; script-src {allowed}; style-src 'unsafe-inline'; "
              "img-src data:; font-src data:; base-uri 'none'; form-action 'none'")
    csp = Markup('<meta http-equiv="Content-Security-Policy" content="{}">').format(policy)
    return _ENV.get_template(template).render(
        csp=csp, scripts=[Markup(js) for js in scripts],
        head_scripts=[Markup(js) for js in head_scripts], **context)


def write_page(folder, name: str, text: str):
    """Write page ``text`` as ``folder/name`` atomically; ``name`` must already be a
    :func:`safe_name` and the result must lie inside ``folder``."""
    path = inside(Path(folder) / name, folder)
    atomic_write(path, text)
    return path


# the render check every page runs: "rendered N of M" once its images or plots have drawn
# (the browser tests read it)
IMAGES_CHECK = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.getElementById('render-check').textContent = 'rendered ' + ok + ' of ' + imgs.length;
});
"""

PLOTS_CHECK = """
function check() {
  const roots = document.querySelectorAll('.plot > div');
  let drawn = 0;
  roots.forEach(el => {
    const seen = [el];
    let found = false;
    while (seen.length && !found) {
      const n = seen.pop();
      if (n.tagName === 'CANVAS' && n.width > 0 && n.height > 0) found = true;
      if (n.shadowRoot) seen.push(...n.shadowRoot.children);
      seen.push(...n.children);
    }
    if (found) drawn++;
  });
  document.getElementById('render-check').textContent =
    `rendered ${drawn} of ${roots.length} in ${Math.round(performance.now())} ms`;
  if (drawn < roots.length) setTimeout(check, 100);
}
window.addEventListener('load', () => setTimeout(check, 100));
"""
