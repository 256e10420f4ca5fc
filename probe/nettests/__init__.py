"""Network tests: one module per test (``web``)."""
