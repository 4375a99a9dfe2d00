"""Model registry: ``create_model(name, **kw)`` and the architectures it knows."""
