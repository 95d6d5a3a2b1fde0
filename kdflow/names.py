"""Registered model and method names, importable without torch so params validate fast.

tests/test_names.py keeps these equal to the registries in kdflow.models and kdflow.losses.
"""

MODEL_NAMES = (
    "cnn3",
    "mlp",
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "vgg8",
    "vgg11",
    "vgg13",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
)
METHOD_NAMES = ("none", "kd", "dkd", "fitnet", "at", "sp", "rkd", "pkt", "crd", "dml")
