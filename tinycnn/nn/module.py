"""``Module`` and ``Parameter``: the bookkeeping shared by every layer.

A layer is a small class in the CS231n style:

* ``__init__`` stores the arguments, creates the :class:`Parameter` objects and sets the caches to
  ``None``;
* ``forward(x)`` computes the output and caches what the backward pass needs;
* ``backward(grad_out)`` takes ``dL/dy`` (same shape as the output), **adds** ``dL/dparam`` into each
  ``Parameter.grad`` (so gradients of several backward passes accumulate, as in PyTorch, until
  :meth:`Module.zero_grad`) and returns ``dL/dx``.

There is no autograd: a container's ``backward`` calls its children's ``backward`` in reverse order
(the chain rule written out), see :class:`~tinycnn.nn.containers.Sequential` and ``tinycnn.nn.blocks``.

The forward cache rule (as PyTorch's autograd graph):

* one ``forward`` feeds **one** ``backward``. ``backward`` consumes the cache: a second ``backward``
  without a new ``forward`` raises ``RuntimeError`` naming the layer (it would add the parameter
  gradients twice). Run the forward pass again for another backward pass.
* a layer keeps a *reference* to what its backward pass needs (a convolution its input), not a copy:
  copying every input would cost a memory pass per layer. So the caller must not change the input array
  in place between ``module(x)`` and ``backward``. This is checked: ``module(x)`` notes 32 elements spread
  evenly over ``x`` (a weak reference, so no memory is kept alive), and ``backward`` raises
  ``RuntimeError`` if any of them changed. Whole-array edits (``x *= 2``, ``x[:] = 0``, ``x += 1``)
  are always caught; an edit of a few pixels can slip through -- pass ``x.copy()`` if you mean to edit.
  (``layer.forward(x)`` called directly, without hooks, is not checked.)

:class:`Module` also keeps three ordered registries, filled by attribute assignment exactly as PyTorch
does (``self.conv = Conv2d(...)`` registers a submodule, ``self.weight = Parameter(...)`` a parameter,
``self.register_buffer("running_mean", ...)`` a buffer). Their order is the order of assignment, which
gives PyTorch's dotted names in PyTorch's order (``features.0.0.weight``, ...), so a PyTorch
``state_dict`` converted to NumPy loads with ``load_state_dict(..., strict=True)``.
"""
from collections import OrderedDict, namedtuple
import weakref

import numpy as np

from .grad_mode import is_grad_enabled

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_INPUT_SAMPLES = 32         # elements of a layer's input noted by __call__ (the forward cache rule above)


def _float_dtype(dtype, name):
    """``dtype`` as ``np.dtype`` if it names float32 or float64, else ``TypeError`` naming ``name``.

    ``np.dtype(None)`` is float64, so ``None`` (a forgotten argument) is refused before converting.
    """
    try:
        converted = None if dtype is None else np.dtype(dtype)
    except TypeError:
        converted = None
    if converted is None or converted not in _FLOAT_DTYPES:      # (np.dtype("float64") == None is True)
        raise TypeError(f"{name} supports float32 and float64 (a dtype or its name); got {dtype!r}")
    return converted


class _InputSample:
    """A weak reference to a layer input and 32 of its elements, to detect an in-place change later."""

    __slots__ = ("array", "step", "values")

    def __init__(self, x):
        self.array = weakref.ref(x)
        self.step = max(1, x.size // _INPUT_SAMPLES)
        self.values = self._sample(x)

    def _sample(self, x):
        # a strided view of a contiguous array costs ~1 us; x.flat[::step] walks the iterator (~100 us)
        flat = x.reshape(-1) if x.flags.c_contiguous else x.flat
        return flat[::self.step].copy()

    def changed(self):
        # bit for bit (a NaN stays equal to itself); bytes compare in ~1 us where np.array_equal costs ~10
        x = self.array()
        return x is not None and self._sample(x).tobytes() != self.values.tobytes()


class Parameter:
    """A trainable array and the gradient accumulated for it.

    Attributes
    ----------
    data : numpy.ndarray
        The value (float32 by default).
    grad : numpy.ndarray
        ``dL/d data``, same shape and dtype, starts at zeros; layers add into it in ``backward``.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data):
        data = np.array(data, copy=True, order="C")
        if data.dtype not in _FLOAT_DTYPES:
            data = data.astype(np.float32)
        self.data = data
        self.grad = np.zeros(data.shape, data.dtype)    # not zeros_like: fresh zero pages, no pass writing them

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    def zero_grad(self):
        """Reset the accumulated gradient to zeros (in place)."""
        self.grad[...] = 0

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What :meth:`Module.load_state_dict` returns (PyTorch's ``_IncompatibleKeys``)."""

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()


class _HookHandle:
    """Returned by :meth:`Module.register_forward_hook`; ``handle.remove()`` unregisters the hook."""

    def __init__(self, hooks, hook):
        self._hooks = hooks
        self._hook = hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


class Module:
    """Base class of every layer and model.

    Subclasses implement ``forward(x)`` and ``backward(grad_out)``; everything else (parameter
    and buffer registries, ``state_dict``, ``train``/``eval``, ``zero_grad``, dtype conversion,
    ``__repr__``) is shared.

    ``plain_container = True`` on a class declares that its ``forward`` only chains, concatenates,
    splits or slices its children, with no arithmetic of its own; ``tinycnn.profile`` then counts its
    children alone. A block with arithmetic of its own (a residual add) defines ``extra_flops`` instead.
    """

    plain_container = False

    def __init__(self):
        # object.__setattr__ because our own __setattr__ consults these dictionaries.
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", [])
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration (like PyTorch)
    def __setattr__(self, name, value):
        attributes = self.__dict__
        if name in attributes and not isinstance(value, (Parameter, Module)):
            attributes[name] = value        # a plain attribute again (layers' caches, every call): fast path
            return
        if "_parameters" not in attributes:
            raise AttributeError(f"call super().__init__() in {type(self).__name__}.__init__ before "
                                 f"assigning attributes (tried to set {name!r})")
        parameters, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            self._forget(name)
            parameters[name] = value
        elif isinstance(value, Module):
            self._forget(name)
            modules[name] = value
        elif name in parameters:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r} "
                                f"(expected a Parameter or None)")
            parameters[name] = None
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to submodule {name!r} "
                                f"(expected a Module or None)")
            modules[name] = None
        elif name in buffers:
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(f"cannot assign {type(value).__name__} to buffer {name!r} "
                                f"(expected a numpy.ndarray or None)")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name):
        """Remove ``name`` from every registry and from the plain attributes."""
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the registries (a training step of MobileNet V2
        # comes here ~1000 times, for every self.weight, self.running_mean, ...: no loop, no generator).
        attributes = self.__dict__
        if "_parameters" in attributes:            # (not yet during __init__ or unpickling)
            if name in attributes["_parameters"]:
                return attributes["_parameters"][name]
            if name in attributes["_buffers"]:
                return attributes["_buffers"][name]
            if name in attributes["_modules"]:
                return attributes["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, parameter):
        """Register ``parameter`` (a :class:`Parameter` or ``None``) under ``name``."""
        if parameter is not None and not isinstance(parameter, Parameter):
            raise TypeError(f"parameter {name!r} must be a Parameter or None; got {type(parameter).__name__}")
        self._forget(name)
        self._parameters[name] = parameter

    def register_buffer(self, name, array):
        """Register a non-trainable array (e.g. batch norm's ``running_mean``) under ``name``.

        Buffers are saved in :meth:`state_dict` and converted by :meth:`to`, but have no gradient.
        """
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError(f"buffer {name!r} must be a numpy.ndarray or None; got {type(array).__name__}")
        self._forget(name)
        self._buffers[name] = array

    def add_module(self, name, module):
        """Register ``module`` as a child called ``name`` (what ``self.name = module`` does)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"child {name!r} must be a Module or None; got {type(module).__name__}")
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"module name must be a non-empty string without '.'; got {name!r}")
        self._forget(name)
        self._modules[name] = module

    register_module = add_module

    # ------------------------------------------------------------------ forward / backward
    def forward(self, x):
        """Compute the output and cache what :meth:`backward` needs."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, grad_out):
        """Given ``dL/d output``, add ``dL/d param`` into each ``Parameter.grad``; return ``dL/d input``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def __call__(self, x, *args, **kwargs):
        # extra arguments are for the few layers with several inputs (MaxUnpool2d, DeformConv2d)
        output = self.forward(x, *args, **kwargs)
        if not is_grad_enabled():                       # no backward will follow (tinycnn/nn/grad_mode.py)
            self.__dict__["_forward_without_grad"] = True
        else:
            self.__dict__.pop("_forward_without_grad", None)
            self.note_input(x)
        if self._forward_hooks:
            for hook in list(self._forward_hooks):          # a copy: a hook may remove itself
                replaced = hook(self, (x, *args), output)
                if replaced is not None:
                    output = replaced
        return output

    def note_input(self, x):
        """Note 32 elements of the input ``x`` of this forward, so that ``backward`` can tell whether it
        was changed in place since (the forward cache rule, module docstring). ``module(x)`` does it."""
        if isinstance(x, np.ndarray) and x.size:
            self.__dict__["_input_sample"] = _InputSample(x)

    def register_forward_hook(self, hook):
        """Call ``hook(module, inputs, output)`` after every ``module(x)``; returns a handle with ``remove()``.

        ``inputs`` is the tuple ``(x,)`` as in PyTorch. A hook that returns a value replaces the output.
        Useful to record feature maps or output shapes (profiling) without changing the model.
        """
        self._forward_hooks.append(hook)
        return _HookHandle(self._forward_hooks, hook)

    # ------------------------------------------------------------------ helpers for layers
    def _layer_name(self):
        return type(self).__name__

    def _check_input(self, x, ndim=4, channels=None, layout="(N, C, H, W)"):
        """Validate a layer input: float ndarray, ``ndim`` dimensions, ``channels`` on axis 1.

        Raises ``TypeError``/``ValueError`` naming the layer, the expected and the actual shape.
        """
        # the common case first, without building any message (a network checks ~100 inputs per forward)
        if (isinstance(x, np.ndarray) and x.dtype in _FLOAT_DTYPES and (ndim is None or x.ndim == ndim)
                and (channels is None or x.shape[1] == channels)):
            for parameter in self._parameters.values():
                if parameter is not None:                           # the first parameter's dtype decides
                    if parameter.data.dtype == x.dtype:
                        return x
                    break
            else:
                return x                                            # no parameters
        name = self._layer_name()
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} expects a numpy.ndarray input; got {type(x).__name__}")
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} expects a float32 or float64 input; got dtype {x.dtype}")
        if ndim is not None and x.ndim != ndim:
            raise ValueError(f"{name} expects a {ndim}-D input {layout}; got shape {x.shape}")
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"{name} expects {channels} input channels (axis 1); got input of shape {x.shape} "
                             f"with {x.shape[1]} channels")
        parameter = next((p for p in self._parameters.values() if p is not None), None)
        if parameter is not None and parameter.dtype != x.dtype:
            raise TypeError(f"{name} has {parameter.dtype} parameters but the input is {x.dtype}: convert "
                            f"the input (x.astype(np.{parameter.dtype})) or the model (.to(np.{x.dtype}))")
        return x

    def _check_grad_out(self, grad_out, output_shape):
        """Check ``grad_out`` in ``backward``: forward must have run, and shapes must match.

        ``output_shape`` is the shape cached by ``forward`` (``None`` if forward never ran).
        """
        name = self._layer_name()
        if self.__dict__.get("_forward_without_grad"):
            raise RuntimeError(f"{name}.backward(): the last forward ran inside tinycnn.nn.no_grad(), which keeps "
                               f"nothing for backward; run the forward pass again outside no_grad()")
        if output_shape is None:
            raise RuntimeError(f"{name}.backward() called before forward(): run the forward pass first, "
                               f"it caches what the backward pass needs")
        # each forward stores a new shape tuple: seeing the same object again means a second backward
        if self.__dict__.get("_consumed_output_shape") is output_shape:
            raise RuntimeError(f"{name}.backward() called twice after one forward(): the first backward used up "
                               f"the forward cache (a second one would add the gradients twice); run forward again")
        sample = self.__dict__.pop("_input_sample", None)
        if sample is not None and sample.changed():
            raise RuntimeError(f"{name}.backward(): the input given to forward() was changed in place since; "
                               f"the layer keeps a reference to it, so its gradients would be wrong. Pass a copy "
                               f"to forward() if you need to change the array")
        self.__dict__["_consumed_output_shape"] = output_shape
        if not isinstance(grad_out, np.ndarray):
            raise TypeError(f"{name}.backward() expects grad_out as a numpy.ndarray; got {type(grad_out).__name__}")
        if grad_out.shape != tuple(output_shape):
            raise ValueError(f"{name}.backward(): grad_out must have the forward output's shape "
                             f"{tuple(output_shape)}; got {grad_out.shape}")
        if grad_out.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name}.backward(): grad_out must be float32 or float64; got {grad_out.dtype}")
        return grad_out

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix="", memo=None):
        """Yield ``(dotted_name, module)`` for this module (name ``prefix``) and all descendants, depth first."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is None:
                continue
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        """Yield this module and all descendants (depth first, registration order)."""
        return iter(self._module_list())

    def _module_list(self):
        """:meth:`modules` as a list, without building the dotted names (``zero_grad`` and the optimizers
        walk the model every step: MobileNet V2 has ~160 modules)."""
        found, seen, stack = [], set(), [self]
        while stack:
            module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            found.append(module)
            stack.extend(child for child in reversed(module._modules.values()) if child is not None)
        return found

    def named_children(self):
        """Yield ``(name, child)`` for the direct submodules."""
        for name, child in self._modules.items():
            if child is not None:
                yield name, child

    def children(self):
        """Yield the direct submodules."""
        for _, child in self.named_children():
            yield child

    def _named_members(self, registry, prefix, recurse):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix="", recurse=True):
        """Yield ``(dotted_name, Parameter)`` in PyTorch's order (each module's own, then its children's).

        A parameter shared by two modules is yielded once.
        """
        yield from self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        """Yield every :class:`Parameter` (see :meth:`named_parameters`; the same order, without the names)."""
        return self._members("_parameters", recurse)

    def _members(self, registry, recurse):
        seen, found = set(), []
        for module in self._module_list() if recurse else [self]:
            for value in getattr(module, registry).values():
                if value is not None and id(value) not in seen:
                    seen.add(id(value))
                    found.append(value)
        return iter(found)

    def named_buffers(self, prefix="", recurse=True):
        """Yield ``(dotted_name, ndarray)`` for every buffer (e.g. ``bn.running_mean``)."""
        yield from self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        """Yield every buffer array."""
        return self._members("_buffers", recurse)

    def get_submodule(self, target):
        """Return the submodule at dotted path ``target`` (``""`` is this module)."""
        module = self
        if target == "":
            return module
        for part in target.split("."):
            child = module._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (path {target!r})")
            module = child
        return module

    def apply(self, function):
        """Call ``function(module)`` on every descendant then on this module (as PyTorch); returns self."""
        for child in self.children():
            child.apply(function)
        function(self)
        return self

    # ------------------------------------------------------------------ modes, gradients, dtype
    def train(self, mode=True):
        """Set training mode (batch norm uses batch statistics, dropout drops) recursively; returns self."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode) expects a bool; got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        """Set evaluation mode (batch norm uses running statistics, dropout is the identity); returns self."""
        return self.train(False)

    def zero_grad(self):
        """Reset every parameter's accumulated gradient to zeros."""
        for parameter in self.parameters():
            parameter.zero_grad()

    def to(self, dtype):
        """Convert every parameter (value and gradient) and floating-point buffer to ``dtype``; returns self.

        ``model.to(np.float64)`` (or ``model.double()``) is what gradient checks need. Integer buffers
        such as ``num_batches_tracked`` keep their dtype. Caches from an earlier forward are dropped by
        the next forward.

        ``dtype`` is float32 or float64, as a NumPy dtype/type or its name (``"float32"``). Anything else
        (``None`` included, which ``np.dtype`` would read as float64) raises ``TypeError``.
        """
        dtype = _float_dtype(dtype, "to(dtype)")
        for module in self.modules():
            for parameter in module._parameters.values():
                if parameter is not None:
                    parameter.data = parameter.data.astype(dtype)
                    parameter.grad = parameter.grad.astype(dtype)
            for name, buffer in module._buffers.items():
                if buffer is not None and buffer.dtype in _FLOAT_DTYPES:
                    module._buffers[name] = buffer.astype(dtype)
        return self

    def double(self):
        """``self.to(np.float64)``."""
        return self.to(np.float64)

    def float(self):
        """``self.to(np.float32)``."""
        return self.to(np.float32)

    # ------------------------------------------------------------------ state dict
    def state_dict(self):
        """Ordered ``{dotted_name: array}`` of every parameter and buffer, in PyTorch's order.

        For each module: its parameters, then its buffers, then its children's entries. The arrays are
        **copies** (a checkpoint does not change when training continues; PyTorch returns views).
        """
        state = OrderedDict()
        for module_prefix, module in self.named_modules():
            dot = f"{module_prefix}." if module_prefix else ""
            for name, parameter in module._parameters.items():
                if parameter is not None:
                    state[dot + name] = parameter.data.copy()
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    state[dot + name] = buffer.copy()
        return state

    def _state_entries(self):
        """``{dotted_name: (module, registry_name, local_name)}`` for every parameter and buffer."""
        entries = OrderedDict()
        for module_prefix, module in self.named_modules():
            dot = f"{module_prefix}." if module_prefix else ""
            for registry in ("_parameters", "_buffers"):
                for name, value in getattr(module, registry).items():
                    if value is not None:
                        entries[dot + name] = (module, registry, name)
        return entries

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays from ``state_dict`` (``{dotted_name: array}``) into parameters and buffers.

        Parameters
        ----------
        state_dict : mapping of str to array-like
            E.g. from :meth:`state_dict`, ``numpy.load`` of a checkpoint, or a PyTorch state dict
            converted with ``{k: v.numpy() for k, v in sd.items()}``. Values are cast to the dtype of
            the parameter or buffer they replace.
        strict : bool
            If True (default), missing or unexpected keys raise ``RuntimeError`` listing them by name.
            A shape mismatch always raises. A missing ``num_batches_tracked`` is tolerated, as in
            PyTorch (old checkpoints did not have it).

        Returns
        -------
        (missing_keys, unexpected_keys) : named tuple of lists of names.

        Nothing is modified unless every check passes.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping from names to arrays; got {type(state_dict).__name__}")
        entries = self._state_entries()
        missing = [key for key in entries if key not in state_dict
                   and not key.split(".")[-1] == "num_batches_tracked"]
        unexpected = [key for key in state_dict if key not in entries]
        errors = []
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        new_values = {}
        for key, (module, registry, name) in entries.items():
            if key not in state_dict:
                continue
            current = getattr(module, registry)[name]
            current_array = current.data if isinstance(current, Parameter) else current
            value = np.asarray(state_dict[key])
            if value.shape != current_array.shape:
                errors.append(f'size mismatch for {key}: copying an array of shape {value.shape}, '
                              f'the shape in the current model is {current_array.shape}.')
                continue
            new_values[key] = value.astype(current_array.dtype, copy=True)
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        for key, value in new_values.items():
            module, registry, name = entries[key]
            current = getattr(module, registry)[name]
            if isinstance(current, Parameter):
                current.data[...] = value          # in place, as PyTorch: references to .data stay valid
            else:
                getattr(module, registry)[name] = value
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing
    def extra_repr(self):
        """The text inside ``Name(...)`` for a layer without children (override in layers)."""
        return ""

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {child_repr}")
        main = type(self).__name__ + "("
        if lines:
            if len(lines) == 1 and not self._modules:
                main += lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"
