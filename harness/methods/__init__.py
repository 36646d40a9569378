"""Every CIR method in one home: the interface they implement (``base``), the registry that names
them (``registry``), CIR-LVLM (``cir_lvlm/``, the method under study) and the methods it is
compared with: the references image-only, text-only and sum (``lower_bounds``), late fusion
(``clip4cir``), early fusion (``sprc``) and textual inversion (``pic2word``, ``searle``), with
the dual-encoder base they share (``dual_encoder_methods``).

This package is the public surface a method author or a script imports from:

    from harness.methods import CIRMethod, MethodParams, register_method, get_method, build_run_method

A method may import harness.core, harness.data, harness.objectives, harness.backbones and
harness.pretraining (it asks stage 0 for its warm start); it never imports the training or
evaluation loops, which drive it through ``CIRMethod``.
"""

from harness.methods.base import CIRMethod, ImageBatch, MethodContext, MethodParams, TripletBatch
from harness.methods.registry import (
    MethodInfo,
    build_method,
    build_run_method,
    get_method,
    list_methods,
    method_names,
    register_method,
)

__all__ = ["CIRMethod", "ImageBatch", "MethodContext", "MethodInfo", "MethodParams", "TripletBatch", "build_method",
           "build_run_method", "get_method", "list_methods", "method_names", "register_method"]
