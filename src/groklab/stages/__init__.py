"""Thin entry points: read params, call the library, write files, log to MLflow."""
