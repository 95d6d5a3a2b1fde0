"""The report: tables and figures from the pipeline's metrics (statistics: docs/algorithms.md)."""
