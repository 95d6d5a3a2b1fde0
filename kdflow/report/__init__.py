"""The report: tables and figures from the pipeline's metrics files (ALGORITHMS §6, §9)."""
