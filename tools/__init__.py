"""Tools run with ``python -m tools.<name>``: export for deployment."""
