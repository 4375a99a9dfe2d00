"""Command-line interface: parse → config → ONE library call → print."""
