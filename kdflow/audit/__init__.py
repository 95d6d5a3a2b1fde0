"""Reproducibility audit: can the numbers in the report be trusted?"""
