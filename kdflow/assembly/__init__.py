"""Modular models: Deep Model Assembling and m2mKD (docs/algorithms.md).

A zoo model is a stem, K stage modules and a head (`KDModel.split`). Both methods train
the K modules independently inside a shared, frozen *meta model* (the same stem and head,
each module replaced by one shallow layer of the same shape), then chain them:

- `meta`: build the meta model of a target network (`build_meta_model`);
- `hybrid`: the meta model with one module swapped in, all else frozen (`HybridModel`);
  module 0 brings its network's stem and module K−1 its head, as in the official code;
- `stitch`: 1×1 convs or linears that adapt widths between networks (`StitchedModule`);
- `m2m`: the module-to-module KD pair and its loss (`M2MObjective`);
- `assemble`: chain trained modules into one network, stem and head included (`assemble`);
- `checkpoint`: write and read the meta and per-module checkpoints.

One meta model serves both methods. DMA needs the meta model of its target; an m2mKD teacher
module reads and writes the meta model's activations directly, so the teacher must have the
meta model's shapes at every module boundary (checked, with both shape chains in the error).
The pipeline therefore builds one meta model, of `assembly.target`, and m2mKD requires the MLL
teacher to match it. For the default resnet8 teacher, every CIFAR ResNet of widths 16/32/64
(resnet14, resnet20, …) and wrn_16_1/wrn_40_1 have the same boundaries, so the default target
resnet14 serves both. A second meta model built from the teacher would lift that requirement
for the price of another stage and another meta model to train; at these defaults it would
be a copy of the first.

m2mKD's teacher modules come, in the paper, from a teacher trained by Deep Model Assembling
in the same meta model (its preparation step); kdflow's MLL teacher is trained end to end, and
its raw modules do not fit the meta model's other layers (measured on MNIST-1D: its teacher
path classifies at 9–20%, chance is 10%), so `assembly.teacher_incubate_epochs` (default 2)
first incubates each teacher module inside each m2m stage; 0 uses the raw module. The teacher
module is frozen while it teaches either way.
"""

from kdflow.assembly.assemble import assemble, combine_module_records
from kdflow.assembly.checkpoint import assembly_model_meta, check_same_meta, load_assembly_model
from kdflow.assembly.hybrid import HybridModel, incubation_model
from kdflow.assembly.m2m import M2MObjective, check_m2m_boundaries, m2m_loss_terms, m2m_pair
from kdflow.assembly.meta import (
    MetaModel,
    boundary_shapes,
    build_meta_model,
    check_module_indices,
)
from kdflow.assembly.stitch import StitchedModule, stitch_layer

__all__ = [
    "HybridModel",
    "M2MObjective",
    "MetaModel",
    "StitchedModule",
    "assemble",
    "assembly_model_meta",
    "boundary_shapes",
    "build_meta_model",
    "check_m2m_boundaries",
    "check_same_meta",
    "check_module_indices",
    "combine_module_records",
    "incubation_model",
    "load_assembly_model",
    "m2m_loss_terms",
    "m2m_pair",
    "stitch_layer",
]
