"""Prefect flows over the DVC pipeline; they run stages as subprocesses, never the library.

Nothing under flows/ imports torch: a flow process schedules stages, the stages train.
"""
