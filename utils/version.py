"""The toolkit's version: what reports and summaries name beside the model (pyproject.toml reads it from here)."""

VERSION = "0.1.0"
