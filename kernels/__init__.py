"""tinycnn's compute kernels: convolution (standard, grouped, dilated, depthwise, pointwise, transposed,
deformable), pooling and max unpooling, forward and backward, as numba-compiled loops.

Every public function validates its arguments in Python (clear ``ValueError``/``TypeError``) and then
calls a private compiled body. :mod:`kernels.reference` has plain-NumPy twins with the same names and
signatures, used by the tests as the readable oracle.

Layouts are PyTorch's: NCHW tensors, conv weight ``(C_out, C_in/groups, kH, kW)``, transposed-conv
weight ``(C_in, C_out/groups, kH, kW)``; float32 and float64.
"""
from .conv2d import (conv2d_backward, conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight,
                     conv2d_forward)
from .depthwise import (depthwise_conv2d_backward_input, depthwise_conv2d_backward_weight,
                        depthwise_conv2d_forward)
from .pointwise import (pointwise_conv2d_backward_input, pointwise_conv2d_backward_weight,
                        pointwise_conv2d_forward)
from .transposed import (conv_transpose2d_backward_input, conv_transpose2d_backward_weight,
                         conv_transpose2d_forward)
from .pooling import (avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d_backward,
                      global_avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward)
from .deformable import deform_conv2d_backward, deform_conv2d_forward
from .pooling import max_unpool2d_backward, max_unpool2d_forward

__all__ = [
    "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward_bias",
    "conv2d_backward",
    "depthwise_conv2d_forward", "depthwise_conv2d_backward_input", "depthwise_conv2d_backward_weight",
    "pointwise_conv2d_forward", "pointwise_conv2d_backward_input", "pointwise_conv2d_backward_weight",
    "conv_transpose2d_forward", "conv_transpose2d_backward_input", "conv_transpose2d_backward_weight",
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
    "global_avg_pool2d_forward", "global_avg_pool2d_backward",
    "deform_conv2d_forward", "deform_conv2d_backward", "max_unpool2d_forward", "max_unpool2d_backward",
]
