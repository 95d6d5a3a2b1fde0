"""Data sources, canonical tables, splits and validation suites."""
