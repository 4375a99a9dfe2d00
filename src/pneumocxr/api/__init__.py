"""The top-level API's implementation: what ``pneumocxr.<name>`` resolves to (see ``pneumocxr``).

Every call here is a thin layer over the library call its CLI verb makes — argument handling,
typed results that display well in Jupyter (HTML tables built by an autoescaping Jinja2 template,
pandas frames, figures) — never a second implementation. Import the names from ``pneumocxr``;
the modules of this package are private.
"""
