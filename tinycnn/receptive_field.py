"""Receptive field of every layer of a network: size, effective stride (jump) and centre, per axis.

The receptive field of a feature-map pixel is the window of input pixels that can change it. Through a
chain of convolutions and poolings it grows by a fixed rule (Araujo, Norris and Sim, "Computing Receptive
Fields of Convolutional Neural Networks", Distill 2019; the google-research/receptive_field library).
Per axis, with ``size``, ``jump`` (the effective stride: input pixels between neighbouring outputs) and
``start`` (the first input row seen by output row 0; negative when it reaches into the zero padding)::

    k_eff = dilation * (k - 1) + 1              # a dilated kernel spans more input, at the same cost
    size  <- size + (k_eff - 1) * jump
    jump  <- jump * stride
    start <- start - padding * jump

Output row ``i`` then sees input rows ``start + i*jump .. start + i*jump + size - 1``, whose centre
``start + (size - 1)/2 + i*jump`` is the "centre offset" (google's library reports ``-start`` as the
"effective padding"). The field is the theoretical one: it is not clipped to the image and counts the
padding it reaches, as in the library's tables (VGG-16's ``pool5``: size 212, stride 32, padding 90).

Element-wise layers (batch norm, activations, dropout, channel shuffle) keep the field. Global average
pooling is a pooling whose window is the whole map; a fully connected layer on a flattened ``H x W``
map is a convolution with an ``H x W`` kernel. A branching block (a residual add, a concatenation)
makes a tensor from several paths; its field is the union of the paths' fields, i.e. the largest one,
as google's library keeps "the path with the largest RF". Squeeze-and-excitation multiplies each pixel
by a gate computed from the whole map, so after an SE block every pixel depends on the whole input:
the union is then the gate's field (the whole map, plus the padding it reached).

Layers whose field is not a window of fixed size and stride (transposed convolution and up-sampling
make the jump a fraction; a deformable convolution's offsets are learned) end the computation: their
rows and every row that depends on them have no field (``None``).
"""
from collections import namedtuple

from kernels._validate import as_pair

from . import nn

__all__ = ["Field", "input_field", "receptive_fields"]

Field = namedtuple("Field", "size jump start extent")
Field.__doc__ = """Receptive field of one tensor, each entry an ``(height, width)`` pair.

size : input pixels seen by one output pixel (unclipped: padding included)
jump : input pixels between neighbouring output pixels (effective stride)
start : first input row/column seen by output pixel ``(0, 0)`` (negative inside the padding)
extent : ``(H, W)`` of the map the field belongs to (for a flattened map: the map before flattening)
"""


def input_field(input_shape):
    """The field of the network's input: each pixel sees itself."""
    return Field((1, 1), (1, 1), (0, 0), tuple(input_shape[2:4]))


def field_center(field):
    """Centre ``(y, x)`` of the field of output pixel ``(0, 0)``, in input pixel coordinates."""
    return tuple(start + (size - 1) / 2 for start, size in zip(field.start, field.size))


def _window(field, kernel, stride, padding, dilation, extent):
    """The rule for one window layer (convolution, pooling), applied to both axes."""
    size, jump, start = [], [], []
    for axis in range(2):
        k_eff = dilation[axis] * (kernel[axis] - 1) + 1
        size.append(field.size[axis] + (k_eff - 1) * field.jump[axis])
        start.append(field.start[axis] - padding[axis] * field.jump[axis])
        jump.append(field.jump[axis] * stride[axis])
    return Field(tuple(size), tuple(jump), tuple(start), tuple(extent))


def _spatial(shape):
    return tuple(shape[2:4]) if len(shape) == 4 else (1, 1)


def _conv_field(layer, field, input_shape, output_shape):
    return _window(field, layer.kernel_size, as_pair(layer.stride, "stride", 1),
                   as_pair(layer.padding, "padding", 0), as_pair(layer.dilation, "dilation", 1),
                   _spatial(output_shape))


def _max_pool_field(layer, field, input_shape, output_shape):
    return _window(field, layer._kernel, layer._stride, layer._padding, (1, 1), _spatial(output_shape))


def _avg_pool_field(layer, field, input_shape, output_shape):
    return _window(field, as_pair(layer.kernel_size, "kernel_size", 1), as_pair(layer.stride, "stride", 1),
                   as_pair(layer.padding, "padding", 0), (1, 1), _spatial(output_shape))


def _adaptive_pool_field(layer, field, input_shape, output_shape):
    """Global pooling: one window as large as the map. (Adaptive pooling to ``h x w`` bins uses the
    largest bin, ``ceil(H / h)``, and the bins' mean step ``H / h`` rounded down.)"""
    (H, W), (h, w) = _spatial(input_shape), _spatial(output_shape)
    kernel = (-(-H // h), -(-W // w))
    stride = (max(1, H // h), max(1, W // w))
    return _window(field, kernel, stride, (0, 0), (1, 1), (h, w))


def _linear_field(layer, field, input_shape, output_shape):
    """A fully connected layer reads the whole (flattened) map: a convolution with a map-sized kernel."""
    return _window(field, field.extent, (1, 1), (0, 0), (1, 1), (1, 1))


def _same_field(layer, field, input_shape, output_shape):
    return field


def _flatten_field(layer, field, input_shape, output_shape):
    return field            # the extent stays the map's, so a following Linear knows its kernel


# layer type -> rule(layer, input field, input shape, output shape) -> output field; subclasses match.
# A leaf layer type missing here (ConvTranspose2d, Upsample, ...) has no field.
FIELD_RULES = {
    nn.Conv2d: _conv_field,
    nn.MaxPool2d: _max_pool_field,
    nn.AvgPool2d: _avg_pool_field,
    nn.AdaptiveAvgPool2d: _adaptive_pool_field,
    nn.Linear: _linear_field,
    nn.Flatten: _flatten_field,
    nn.BatchNorm2d: _same_field,
    nn.ReLU: _same_field, nn.ReLU6: _same_field, nn.LeakyReLU: _same_field, nn.Sigmoid: _same_field,
    nn.Hardsigmoid: _same_field, nn.Hardswish: _same_field, nn.SiLU: _same_field,
    nn.Dropout: _same_field, nn.Identity: _same_field, nn.ChannelShuffle: _same_field,
}


def _rule_for(module):
    for cls in type(module).__mro__:
        if cls in FIELD_RULES:
            return FIELD_RULES[cls]
    return None


def _union(candidates, shape):
    """Field of a tensor of ``shape`` made by a block's own code (add, concatenation, slicing, SE scaling)
    from the tensors the block has seen so far: the union of the fields on its grid, and of the fields of
    1 x 1 maps broadcast over it (an SE gate). ``None`` if no candidate fits or one is unknown."""
    extent = _spatial(shape)
    on_grid = [f for f in candidates if f is not None and f.extent == extent]
    broadcast = [f for f in candidates if f is not None and f.extent == (1, 1) and extent != (1, 1)]
    if not on_grid or any(f is None for f in candidates):
        return None
    widest = max(on_grid, key=lambda f: f.size[0] * f.size[1])
    start, size = [], []
    for axis in range(2):
        low = min(f.start[axis] for f in on_grid + broadcast)
        high = max(f.start[axis] + f.size[axis] - 1 for f in on_grid + broadcast)
        start.append(low)
        size.append(high - low + 1)
    return Field(tuple(size), widest.jump, tuple(start), extent)


def receptive_fields(records, input_array):
    """``{id(call): Field or None}`` for the output of every recorded call of a profiling pass.

    ``records`` are the ``("enter" | "exit", call)`` events of :func:`tinycnn.profile`'s pass (each call
    has ``module``, ``is_leaf``, ``input`` and ``output``). Tensors are followed by identity: a tensor a
    layer returned has that layer's field; a tensor that appears as an input without having been returned
    by any call was made by the enclosing block's own code, and gets the union of the fields the block
    has seen (its input and its parts' outputs).
    """
    fields = {id(input_array): input_field(input_array.shape)}
    frames = []                 # per running block: the fields it has seen (its input, its parts' outputs)
    inputs = {}                 # id(call) -> field of its input
    result = {}

    def field_of(array):
        key = id(array)
        if key not in fields:
            fields[key] = _union(frames[-1], array.shape) if frames else None
        return fields[key]

    for event, call in records:
        if event == "enter":
            field = field_of(call.input)
            inputs[id(call)] = field
            if not call.is_leaf:
                frames.append([field])
            continue
        if call.is_leaf:
            field, rule = inputs[id(call)], _rule_for(call.module)
            if field is not None and rule is not None:
                field = rule(call.module, field, tuple(call.input.shape), tuple(call.output.shape))
            else:
                field = None
            if call.output is not call.input:
                fields[id(call.output)] = field
        else:
            seen = frames.pop()
            if id(call.output) not in fields:
                fields[id(call.output)] = _union(seen, call.output.shape)
            field = fields[id(call.output)]
        if frames:
            frames[-1].append(field)
        result[id(call)] = field
    return result
