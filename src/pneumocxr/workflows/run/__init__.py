"""The ``pneumocxr run`` pipeline: plan the models, check their weights, run each step."""
