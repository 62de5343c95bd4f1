"""A short PyTorch-autograd deformable convolution: the live reference for ``kernels.deform_conv2d_*``.

torchvision's ``torchvision.ops.deform_conv2d`` is a compiled operator that does not load with the
CPU PyTorch installed here, so this file re-states its semantics (read from torchvision's
``deform_conv2d_kernel.cpp``) with plain tensor operations and lets autograd derive all four
gradients (x, offset, weight, mask):

1. the real sampling position of every (offset group, tap, output pixel);
2. gather the four neighbours of each position (zeros outside the image: torchvision's rule) and mix
   them with the bilinear weights ``(1-ly)(1-lx), (1-ly)lx, ly(1-lx), ly lx``;
3. multiply by the mask and contract with the weight in one ``einsum`` per weight group.

``floor`` has zero derivative, so autograd differentiates the weights ``ly = y - floor(y)`` only:
the same one-sided slopes torchvision's hand-written backward uses. Needs ``torch`` (the
``reference`` extra); used by ``tools/fixtures_deform.py`` and the live tests.
"""
import torch


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def deform_conv2d(x, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    """torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask) with autograd.

    x (N, C_in, H, W); offset (N, 2*G_off*kH*kW, H_out, W_out); weight (C_out, C_in/groups, kH, kW);
    mask (N, G_off*kH*kW, H_out, W_out) or None. Returns y (N, C_out, H_out, W_out).
    """
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    N, C_in, H, W = x.shape
    C_out, C_in_per_group, kH, kW = weight.shape
    K = kH * kW
    groups = C_in // C_in_per_group
    _, offset_channels, H_out, W_out = offset.shape
    offset_groups = offset_channels // (2 * K)
    offsets = offset.reshape(N, offset_groups, K, 2, H_out, W_out)
    if mask is None:
        mask = torch.ones((N, offset_groups * K, H_out, W_out), dtype=x.dtype)
    masks = mask.reshape(N, offset_groups, K, H_out, W_out)

    # 1. sampling positions (N, G_off, K, H_out, W_out)
    tap_row = torch.arange(K) // kW
    tap_col = torch.arange(K) % kW
    base_y = (torch.arange(H_out) * sh - ph)[None, :, None] + (tap_row * dh)[:, None, None]   # (K, H_out, 1)
    base_x = (torch.arange(W_out) * sw - pw)[None, None, :] + (tap_col * dw)[:, None, None]   # (K, 1, W_out)
    y = base_y.to(x.dtype) + offsets[:, :, :, 0]
    x_pos = base_x.to(x.dtype) + offsets[:, :, :, 1]

    # 2. bilinear sample of every channel: channel c uses the shifts of offset group c // (C_in/G_off)
    channels_per_group = C_in // offset_groups
    y = y.repeat_interleave(channels_per_group, dim=1)            # (N, C_in, K, H_out, W_out)
    x_pos = x_pos.repeat_interleave(channels_per_group, dim=1)
    y_low, x_low = torch.floor(y), torch.floor(x_pos)
    ly, lx = y - y_low, x_pos - x_low
    y_low, x_low = y_low.long(), x_low.long()
    batch = torch.arange(N)[:, None, None, None, None]
    channel = torch.arange(C_in)[None, :, None, None, None]
    sample = torch.zeros_like(y)
    for corner_y, weight_y in ((y_low, 1 - ly), (y_low + 1, ly)):
        for corner_x, weight_x in ((x_low, 1 - lx), (x_low + 1, lx)):
            inside = (corner_y >= 0) & (corner_y < H) & (corner_x >= 0) & (corner_x < W)
            values = x[batch, channel, corner_y.clamp(0, H - 1), corner_x.clamp(0, W - 1)]
            sample = sample + torch.where(inside, values, torch.zeros_like(values)) * weight_y * weight_x

    # 3. modulate and contract with the weight, group by group
    sample = sample * masks.repeat_interleave(channels_per_group, dim=1)               # (N, C_in, K, H_out, W_out)
    sample = sample.reshape(N, groups, C_in_per_group, K, H_out, W_out)
    w = weight.reshape(groups, C_out // groups, C_in_per_group, K)
    out = torch.einsum("ngckhw,gock->ngohw", sample, w).reshape(N, C_out, H_out, W_out)
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out
