"""``socktools report``: render a saved flood result (``flood --json``) as a self-contained HTML page.

* :mod:`.html` -- :func:`~socktools.report.html.render`, the page (inline CSS and SVG, no script);
* :mod:`.plots` -- the plots, drawn by matplotlib (the ``report`` extra).
"""
