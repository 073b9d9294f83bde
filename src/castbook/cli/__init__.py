"""The ``castbook`` command line (Typer + Rich), one module per domain."""
