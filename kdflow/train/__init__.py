"""The one trainer: loops, checkpoints, resume, devices and logging hooks."""
