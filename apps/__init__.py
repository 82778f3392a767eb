"""Thin absl entry points; the only place flags live."""
