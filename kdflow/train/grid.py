"""The names along the student grid's axes besides methods, importable without torch.

kdflow.config validates params against these, kdflow/train/protocols.py implements the
protocols (docs/algorithms.md), and the distill stage takes them as its --teacher/--protocol.
"""

PROTOCOLS = ("full", "fewshot", "zeroshot")
TEACHERS = ("mll", "mcmi")  # the teacher kinds a student may learn from
NO_TEACHER = "none"  # the teacher of the baseline, which learns from labels alone
