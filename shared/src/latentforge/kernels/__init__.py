"""GPU kernels with exact CPU references.

Holds the masked bottleneck attention used by livr and the fused point-cloud
projection used by spatia (see the kernels issue); each kernel ships a plain-torch
``reference`` backend that is the ground truth its tests compare against.
"""
