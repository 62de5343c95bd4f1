"""Containers that run layers one after the other: :func:`chain_forward`, :func:`chain_backward`,
:class:`Sequential` and :class:`ModuleList`.

A chain is where neighbouring layers can be merged without anyone noticing (:mod:`tinycnn.nn.fusion`):
a batch norm and the ReLU/ReLU6 after it share one pass, and inside ``no_grad()`` a convolution joins
them.
"""
from collections import OrderedDict

from kernels._jit import one_blas_thread

from .fusion import fused_chain_backward, fused_chain_forward
from .module import Module


def chain_forward(layers, x):
    """Run ``layers`` one after the other: ``chain_forward([a, b, c], x) = c(b(a(x)))``.

    Each layer is called (``layer(x)``, not ``layer.forward(x)``), so its forward hooks run. A batch
    norm followed by a ReLU/ReLU6 runs as one pass, and inside :func:`~tinycnn.nn.grad_mode.no_grad` a
    convolution, batch norm and ReLU/ReLU6 in a row run as one step (:mod:`tinycnn.nn.fusion`; same
    results, only for layers without hooks).

    The whole chain runs inside one :func:`kernels._jit.one_blas_thread` scope: the layers' own scopes
    are then nested ones, which cost nothing (an outermost scope costs ~25 us, once per model call
    instead of once per layer).
    """
    with one_blas_thread():
        return fused_chain_forward(list(layers), x)


def chain_backward(layers, grad_out):
    """The chain rule through ``layers`` run by :func:`chain_forward`: ``a.backward(b.backward(c.backward(g)))``
    (a batch norm and the ReLU/ReLU6 fused with it in forward take one step, :mod:`tinycnn.nn.fusion`)."""
    with one_blas_thread():
        return fused_chain_backward(list(layers), grad_out)


class _ModuleSequence(Module):
    """What :class:`Sequential` and :class:`ModuleList` share: children named ``"0"``, ``"1"``, ... in order."""

    plain_container = True

    def append(self, module):
        """Add ``module`` at the end (named ``str(len(self))``); returns self."""
        self.add_module(str(len(self)), module)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(_ModuleSequence):
    """Apply modules one after the other; children are named ``"0"``, ``"1"``, ...

    ``Sequential(a, b, c)(x) = c(b(a(x)))`` and, by the chain rule,
    ``backward(g) = a.backward(b.backward(c.backward(g)))``. An ``OrderedDict`` of ``name: module``
    gives the children other names, as in PyTorch.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                self.add_module(str(index), module)

    def forward(self, x):
        return chain_forward(self._modules.values(), x)

    def backward(self, grad_out):
        return chain_backward(self._modules.values(), grad_out)

    def __getitem__(self, index):
        modules = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(modules[index]))
        if not -len(modules) <= index < len(modules):
            raise IndexError(f"index {index} is out of range for a Sequential of length {len(modules)}")
        return modules[index][1]


class ModuleList(_ModuleSequence):
    """A list of modules whose parameters are registered (names ``"0"``, ``"1"``, ...); no forward of its own."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(modules[index])
        return modules[index]
