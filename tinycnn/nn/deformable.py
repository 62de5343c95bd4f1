"""``DeformConv2d``: deformable convolution v1 (arXiv:1703.06211) and v2 (modulated, arXiv:1811.11168).

The layer owns the weight and bias, exactly like torchvision's ``torchvision.ops.DeformConv2d``
(same arguments, shapes, initialisation and ``state_dict`` keys); the sampling shifts ``offset`` and the
optional modulation ``mask`` are *inputs* of ``forward``, because in a network another layer predicts
them from the features. The arithmetic is :func:`kernels.deform_conv2d_forward` / ``_backward``.

A typical block (as in the DCN papers) predicts offsets with an ordinary convolution that has the same
kernel, stride, padding and dilation, initialised to zero so that training starts from a plain
convolution::

    offset_conv = nn.Conv2d(C_in, 2 * 3 * 3, 3, padding=1)           # (dy, dx) per tap
    offset_conv.weight.data[:] = 0; offset_conv.bias.data[:] = 0
    deform = nn.DeformConv2d(C_in, C_out, 3, padding=1)

    y = deform(x, offset_conv(x))
    grad_x = deform.backward(grad_y) + offset_conv.backward(deform.grad_offset)   # x feeds both
"""
from kernels import conv2d_backward_bias, deform_conv2d_backward, deform_conv2d_forward

from .conv import _conv_repr, init_conv2d_parameters
from .module import Module


class DeformConv2d(Module):
    """Deformable 2-D convolution: every kernel tap reads the input at a learned, real-valued shift.

    ``y[n, o, i, j] = bias[o] + sum_{c, a, b} weight[o, c, a, b] * mask[n, g*K + k, i, j] *
    bilinear(x[n, c], i*s - p + a*d + dy, j*s - p + b*d + dx)``, ``(dy, dx)`` = the offsets of tap
    ``k = a*kW + b`` for the offset group ``g`` of channel ``c``; zeros are read outside the image.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding, dilation : int or (int, int)
    groups : int
        Weight groups, as in :class:`Conv2d` (the offset groups are set by the offset's channel count).
    bias : bool
    rng : numpy.random.Generator, optional
        Generator for the initial weights; default: the shared one (``tinycnn.nn.init.manual_seed``).

    Shapes
    ------
    forward(x, offset, mask=None):
        x (N, C_in, H, W); offset (N, 2*offset_groups*kH*kW, H_out, W_out);
        mask (N, offset_groups*kH*kW, H_out, W_out) or None (v1) -> y (N, C_out, H_out, W_out).
    weight (C_out, C_in/groups, kH, kW), bias (C_out,), initialised like :class:`Conv2d` (and torchvision).

    Backward
    --------
    ``backward(grad_out)`` adds the weight and bias gradients into ``.grad`` and returns ``dL/dx``.
    The gradients of the two other inputs are left on the layer, for whatever produced them:
    ``layer.grad_offset`` (offset's shape) and ``layer.grad_mask`` (mask's shape; ``None`` without a mask).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, *, rng=None):
        super().__init__()
        init_conv2d_parameters(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                               bias, rng)
        self._x = self._offset = self._mask = None                     # cached inputs
        self._output_shape = None
        self.grad_offset = None        # dL/d offset, set by backward
        self.grad_mask = None          # dL/d mask, set by backward (None without a mask)

    def _hyper_parameters(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation)

    def forward(self, x, offset, mask=None):
        self._check_input(x, channels=self.in_channels)
        bias = None if self.bias is None else self.bias.data
        y = deform_conv2d_forward(x, offset, self.weight.data, bias, mask=mask,
                                  **self._hyper_parameters())          # (N, C_out, H_out, W_out)
        self._x, self._offset, self._mask, self._output_shape = x, offset, mask, y.shape
        return y

    def backward(self, grad_out):
        self._check_grad_out(grad_out, self._output_shape)
        grad_x, self.grad_offset, grad_weight, self.grad_mask = deform_conv2d_backward(
            grad_out, self._x, self._offset, self.weight.data, mask=self._mask, **self._hyper_parameters())
        self.weight.grad += grad_weight
        if self.bias is not None:
            self.bias.grad += conv2d_backward_bias(grad_out)          # sum over N, H_out, W_out
        return grad_x

    def extra_repr(self):
        return _conv_repr(self, [("padding", (0, 0)), ("dilation", (1, 1)), ("groups", 1)])
