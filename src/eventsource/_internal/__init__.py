"""Internal helpers: not public API, may change without notice."""
