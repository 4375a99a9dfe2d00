"""``pneumocxr serve``: the prediction core behind a versioned HTTP API and a web page.

FastAPI app factory (``app.create_app``), API keys and an audit log in a real database
(``pneumocxr.store``), Prometheus metrics, bounded admission. Secure by default: loopback bind, keys
required, no CORS, no patient identifiers in logs.
"""
