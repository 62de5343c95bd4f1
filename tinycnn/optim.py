"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules, with PyTorch's exact update rules.

An optimizer is built as in PyTorch, from anything that yields objects with ``.data`` and ``.grad``
NumPy arrays (``model.parameters()``), or from a list of parameter groups (dicts with a ``"params"``
list and per-group options)::

    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    optimizer = AdamW(param_groups_no_decay(model, weight_decay=0.05), lr=1e-3)
    scheduler = warmup_cosine(optimizer, warmup_steps=5, total_steps=100)

    for epoch in range(100):
        for images, labels in batches:
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            model.backward(criterion.backward())
            optimizer.step()                       # updates every p.data in place
        scheduler.step()                           # sets group["lr"] for the next epoch

Every update below is written in the order PyTorch's single-tensor ("for-loop") implementation
performs it, so in float64 the parameters agree with ``torch.optim`` to rounding (tests check this
over several steps; ``tests/fixtures/optim.npz`` holds PyTorch's numbers). Parameters are updated in
place and keep their dtype (float32 stays float32).
"""
from bisect import bisect_right
import math
import numbers

import numpy as np

from numba.typed import List

from kernels._jit import inline_jit, jit, parallel_jit, prange

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "param_groups_no_decay",
    "LRScheduler", "StepLR", "CosineAnnealingLR", "LinearLR", "SequentialLR", "warmup_cosine",
]


# --------------------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------------------

def _check_parameter(param, where):
    data = getattr(param, "data", None)
    if not isinstance(data, np.ndarray) or not hasattr(param, "grad"):
        raise TypeError(f"{where} must contain parameters: objects with a .data ndarray and a .grad attribute; "
                        f"got {type(param).__name__}")
    if data.dtype.kind != "f":
        raise TypeError(f"{where}: parameter .data must be a floating-point array; got dtype {data.dtype}")


def _check_number(value, name, low=0.0, high=None, high_inclusive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; got {value!r}")
    value = float(value)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if value < low or too_high or math.isnan(value):
        upper = "" if high is None else (f" and <= {high}" if high_inclusive else f" and < {high}")
        raise ValueError(f"{name} must be >= {low}{upper}; got {value}")
    return value


class Optimizer:
    """Base class: holds parameter groups and per-parameter state, and implements the bookkeeping.

    Subclasses define ``defaults`` (the hyper-parameters and their default values), check them in
    ``_check_group`` and update one parameter in ``_update``.

    Attributes
    ----------
    param_groups : list of dict
        Each group has a ``"params"`` list and one value per hyper-parameter (``"lr"``, ...).
        Schedulers change ``group["lr"]``.
    state : dict
        Per-parameter state (momentum buffers, Adam moments, step counts), keyed by ``id(param)``;
        use :meth:`state_of` to read it for a parameter.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}
        if isinstance(params, dict):
            raise TypeError("params must be an iterable of parameters or a list of parameter-group dicts; "
                            "got a dict (pass model.parameters(), not model.state_dict())")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a group ``{"params": [...], option: value, ...}``; missing options take the defaults."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"a parameter group must be a dict with a 'params' entry; got {type(group).__name__}")
        unknown = set(group) - set(self.defaults) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for {type(self).__name__}; "
                             f"valid options: {sorted(self.defaults)}")
        params = group["params"]
        params = [params] if hasattr(params, "data") else list(params)
        for param in params:
            _check_parameter(param, f"param group {len(self.param_groups)}")
        already_seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len(set(map(id, params))) != len(params) or already_seen & set(map(id, params)):
            raise ValueError("a parameter appears more than once (in one group or in two groups)")
        full_group = {**self.defaults, **group, "params": params}
        self._check_group(full_group)
        self.param_groups.append(full_group)

    def _check_group(self, group):
        _check_number(group["lr"], "lr")
        _check_number(group["weight_decay"], "weight_decay")

    def state_of(self, param):
        """The state dict of one parameter (empty before its first update)."""
        return self.state.setdefault(id(param), {})

    def zero_grad(self):
        """Set every parameter's ``.grad`` to zeros (in place, so views of it stay valid)."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.grad[...] = 0

    def step(self):
        """Update every parameter that has a gradient, in place (parameters with ``grad=None`` are skipped)."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.shape != param.data.shape:
                    raise ValueError(f"a parameter's grad has shape {param.grad.shape} but its data has shape "
                                     f"{param.data.shape}")
                self._update(param, param.grad, group, self.state_of(param))

    def _update(self, param, grad, group, state):
        raise NotImplementedError

    # -- saving and restoring ----------------------------------------------------------------------
    def state_dict(self):
        """A copy of the optimizer's state, in PyTorch's layout.

        ``{"state": {index: {"momentum_buffer": array, ...}}, "param_groups": [{"lr": ..., "params": [indices]}]}``
        where ``index`` numbers the parameters in group order. Arrays are copies, so later steps do not
        change a saved state.
        """
        index_of = {}
        groups = []
        for group in self.param_groups:
            indices = []
            for param in group["params"]:
                index_of[id(param)] = len(index_of)
                indices.append(index_of[id(param)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": indices})
        state = {}
        for param_id, index in index_of.items():
            if self.state.get(param_id):
                state[index] = {key: (value.copy() if isinstance(value, np.ndarray) else value)
                                for key, value in self.state[param_id].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` into an optimizer built over parameters of the same shapes."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(saved_groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}")
        params = []
        for number, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"parameter group {number} has {len(group['params'])} parameters but the "
                                 f"state_dict's has {len(saved['params'])}")
            params.extend(zip(saved["params"], group["params"]))
        new_state = {}
        for index, param in params:
            saved_state = state_dict["state"].get(index, state_dict["state"].get(str(index)))
            if not saved_state:
                continue
            restored = {}
            for key, value in saved_state.items():
                if isinstance(value, np.ndarray) and value.ndim > 0:
                    if value.shape != param.data.shape:
                        raise ValueError(f"state {key!r} of parameter {index} has shape {value.shape} but the "
                                         f"parameter has shape {param.data.shape}")
                    restored[key] = value.astype(param.data.dtype, copy=True)
                elif key == "step":
                    restored[key] = int(np.asarray(value))
                else:
                    restored[key] = value
            new_state[id(param)] = restored
        self.state = new_state
        for saved, group in zip(saved_groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = value

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for number, group in enumerate(self.param_groups):
            options = ", ".join(f"{k}={v}" for k, v in group.items() if k != "params")
            lines.append(f"  group {number}: {len(group['params'])} params, {options}")
        return "\n".join(lines + [")"])


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay.

    PyTorch's rule (``torch.optim.SGD``), for gradient ``g`` of parameter ``p``::

        g = g + weight_decay * p                         # L2 penalty added to the gradient
        b = g                 on the first step          # momentum buffer starts at the gradient
        b = momentum * b + (1 - dampening) * g   later
        g = g + momentum * b  if nesterov  else  b       # Nesterov: look ahead along the buffer
        p = p - lr * g

    Nesterov momentum: Sutskever et al., ICML 2013. ``momentum=0`` gives plain SGD.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        _check_number(group["momentum"], "momentum")
        _check_number(group["dampening"], "dampening")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0 (as in PyTorch)")

    def _update(self, param, grad, group, state):
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        if weight_decay != 0:
            grad = grad + weight_decay * param.data
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = np.array(grad, dtype=param.data.dtype, copy=True)
            else:
                buffer *= momentum
                buffer += (1 - group["dampening"]) * grad
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        param.data -= lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba, arXiv:1412.6980) with PyTorch's bias correction and eps placement.

    For gradient ``g`` at step ``t = 1, 2, ...``::

        g = g + weight_decay * p                  # L2 penalty in the gradient (Adam; AdamW differs)
        m = beta1 * m + (1 - beta1) * g           # first moment, starts at 0
        v = beta2 * v + (1 - beta2) * g * g       # second moment, starts at 0
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    ``eps`` is added *after* the bias-corrected square root, as in PyTorch.
    """

    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        betas = tuple(group["betas"])
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2); got {group['betas']!r}")
        _check_number(betas[0], "betas[0]", 0.0, 1.0)
        _check_number(betas[1], "betas[1]", 0.0, 1.0)
        group["betas"] = betas
        _check_number(group["eps"], "eps")

    def step(self):
        """Update every parameter that has a gradient, in place (parameters with ``grad=None`` are skipped).

        The C-contiguous parameters of a group that share a dtype and a step count go through *one*
        compiled call, in parallel over the parameters: a MobileNet has ~160 of them, mostly small, and a
        call per parameter cost ~30 us each (~5 ms per step, measured at batch 2 on a 2-core AMD EPYC).
        The arithmetic is the same, element by element, as the per-parameter path (:meth:`_update`).
        """
        for group in self.param_groups:
            batches = {}                                       # (dtype, step) -> [(p, g, m, v), ...]
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                if grad.shape != param.data.shape:
                    raise ValueError(f"a parameter's grad has shape {grad.shape} but its data has shape "
                                     f"{param.data.shape}")
                state = self.state_of(param)
                self._init_state(param, state)
                arrays = (param.data, grad, state["exp_avg"], state["exp_avg_sq"])
                if all(array.flags.c_contiguous and array.dtype == param.data.dtype for array in arrays):
                    state["step"] += 1
                    batches.setdefault((param.data.dtype, state["step"]), []).append(arrays)
                else:
                    self._update(param, grad, group, state)
            for (dtype, step), batch in batches.items():
                lists = self._flat_lists(batch)
                _adam_multi_kernel(*lists, *self._constants(group, step, dtype), self.decoupled_weight_decay)

    def _flat_lists(self, batch):
        """Four numba typed lists of flat views (parameters, gradients, moments), kept while the arrays
        stay the same objects (building them costs ~1 ms for a MobileNet; checking them ~20 us)."""
        key = tuple(id(array) for arrays in batch for array in arrays)
        cache = self.__dict__.setdefault("_typed_lists", {})
        lists = cache.get(key)
        if lists is None:
            if len(cache) >= 8:
                cache.clear()
            lists = cache[key] = tuple(List([arrays[k].reshape(-1) for arrays in batch]) for k in range(4))
        return lists

    @staticmethod
    def _init_state(param, state):
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(param.data)
            state["exp_avg_sq"] = np.zeros_like(param.data)

    @staticmethod
    def _constants(group, step, dtype):
        """The step's scalars for :func:`_adam_elements`, each in the parameters' dtype (as NumPy would)."""
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        scalar = dtype.type
        return (scalar(1 - beta1), scalar(beta2), scalar(1 - beta2), scalar(lr / bias_correction1),
                scalar(math.sqrt(bias_correction2)), scalar(eps), scalar(weight_decay), scalar(1 - lr * weight_decay))

    def _update(self, param, grad, group, state):
        """One parameter (any layout): NumPy lines, or :func:`_adam_kernel` when C-contiguous."""
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        self._init_state(param, state)
        state["step"] += 1
        step = state["step"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = lr / bias_correction1
        arrays = (param.data, grad, exp_avg, exp_avg_sq)
        if all(array.flags.c_contiguous and array.dtype == param.data.dtype for array in arrays):
            # the same arithmetic as below in one compiled pass
            _adam_kernel(*(array.reshape(-1) for array in arrays), *self._constants(group, step, param.data.dtype),
                         self.decoupled_weight_decay)
            return

        if weight_decay != 0:
            if self.decoupled_weight_decay:
                param.data *= 1 - lr * weight_decay          # AdamW: shrink the weights directly
            else:
                grad = grad + weight_decay * param.data      # Adam: L2 penalty in the gradient

        exp_avg += (1 - beta1) * (grad - exp_avg)            # = beta1 * m + (1 - beta1) * g
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad

        denominator = np.sqrt(exp_avg_sq) / math.sqrt(bias_correction2) + eps
        param.data -= step_size * exp_avg / denominator


@inline_jit
def _adam_elements(param, grad, exp_avg, exp_avg_sq, one_minus_beta1, beta2, one_minus_beta2, step_size,
                   sqrt_bias_correction2, eps, weight_decay, decay_factor, decoupled):
    """:meth:`Adam._update`'s NumPy lines, element by element, in the same order and dtype (flat (M,) arrays)."""
    for i in range(param.shape[0]):
        g = grad[i]
        if weight_decay != 0:
            if decoupled:
                param[i] *= decay_factor                         # AdamW
            else:
                g = g + weight_decay * param[i]                  # Adam
        exp_avg[i] += one_minus_beta1 * (g - exp_avg[i])
        exp_avg_sq[i] *= beta2
        exp_avg_sq[i] += one_minus_beta2 * g * g
        denominator = np.sqrt(exp_avg_sq[i]) / sqrt_bias_correction2 + eps
        param[i] -= step_size * exp_avg[i] / denominator


@jit
def _adam_kernel(param, grad, exp_avg, exp_avg_sq, one_minus_beta1, beta2, one_minus_beta2, step_size,
                 sqrt_bias_correction2, eps, weight_decay, decay_factor, decoupled):
    """One parameter: :func:`_adam_elements` on flat (M,) arrays."""
    _adam_elements(param, grad, exp_avg, exp_avg_sq, one_minus_beta1, beta2, one_minus_beta2, step_size,
                   sqrt_bias_correction2, eps, weight_decay, decay_factor, decoupled)


@parallel_jit
def _adam_multi_kernel(params, grads, exp_avgs, exp_avg_sqs, one_minus_beta1, beta2, one_minus_beta2, step_size,
                       sqrt_bias_correction2, eps, weight_decay, decay_factor, decoupled):
    """Every parameter of a batch: :func:`_adam_elements` on each (typed lists of flat arrays); the
    parameters are disjoint, so a ``prange`` over them writes nothing twice."""
    count = np.int64(len(params))
    for task in prange(count):
        t = np.int64(task)                              # typed lists want a signed index
        _adam_elements(params[t], grads[t], exp_avgs[t], exp_avg_sqs[t], one_minus_beta1, beta2, one_minus_beta2,
                       step_size, sqrt_bias_correction2, eps, weight_decay, decay_factor, decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, arXiv:1711.05101).

    The same moments as :class:`Adam`, but the weight decay does not pass through them: before the
    Adam step, ``p = p * (1 - lr * weight_decay)``. Default ``weight_decay=1e-2`` (as PyTorch).
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def param_groups_no_decay(model, weight_decay):
    """Split a model's parameters into a decayed group and a no-decay group.

    Biases and every 1-D parameter (batch-norm ``weight``/``bias``, ...) go to the group with
    ``weight_decay=0``: shrinking a BN scale or a bias towards zero does not regularise the function
    the way shrinking a convolution's weights does, and usually just hurts.

    Parameters
    ----------
    model : object with ``named_parameters()`` yielding ``(name, parameter)``
    weight_decay : float, for the decayed group

    Returns
    -------
    list of two dicts ``[{"params": decayed, "weight_decay": weight_decay},
    {"params": not_decayed, "weight_decay": 0.0}]``, ready for any optimizer here.
    """
    if not hasattr(model, "named_parameters"):
        raise TypeError(f"model must have named_parameters(); got {type(model).__name__}")
    weight_decay = _check_number(weight_decay, "weight_decay")
    decayed, not_decayed = [], []
    for name, param in model.named_parameters():
        _check_parameter(param, f"parameter {name!r}")
        is_bias_or_1d = param.data.ndim <= 1 or name.split(".")[-1] == "bias"
        (not_decayed if is_bias_or_1d else decayed).append(param)
    return [{"params": decayed, "weight_decay": weight_decay},
            {"params": not_decayed, "weight_decay": 0.0}]


# --------------------------------------------------------------------------------------------------
# Learning-rate schedules
# --------------------------------------------------------------------------------------------------

class LRScheduler:
    """Base class for schedules written as a closed form ``lr = lr_at(epoch, base_lr)``.

    As in PyTorch: the constructor records each group's ``initial_lr`` (the base lr) and sets the
    lr for epoch 0; each :meth:`step` advances ``last_epoch`` by one and sets
    ``group["lr"] = lr_at(last_epoch, base_lr)``. Call ``scheduler.step()`` after
    ``optimizer.step()``, once per epoch (or once per batch if the schedule counts batches).
    """

    def __init__(self, optimizer, last_epoch=-1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"optimizer must be an Optimizer; got {type(optimizer).__name__}")
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, numbers.Integral) or last_epoch < -1:
            raise ValueError(f"last_epoch must be an int >= -1; got {last_epoch!r}")
        self.optimizer = optimizer
        for number, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"param group {number} has no 'initial_lr': resuming with last_epoch="
                               f"{last_epoch} needs an optimizer that was scheduled before")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self.step()

    def lr_at(self, epoch, base_lr):
        """The learning rate at ``epoch`` (>= 0) for a group whose base lr is ``base_lr``."""
        raise NotImplementedError

    def step(self):
        """Advance one epoch and write the new learning rates into the optimizer's groups."""
        self.last_epoch += 1
        self._apply(self.last_epoch)

    def _apply(self, epoch):
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(epoch, base_lr)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The learning rates (one per group) set by the last :meth:`step`."""
        return list(self._last_lr)

    def state_dict(self):
        """Everything but the optimizer: ``last_epoch``, ``base_lrs`` and the hyper-parameters."""
        return {key: (list(value) if isinstance(value, list) else value)
                for key, value in self.__dict__.items() if key not in ("optimizer", "_schedulers")}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` and set the optimizer's lrs for the restored epoch."""
        self.__dict__.update({key: (list(value) if isinstance(value, list) else value)
                              for key, value in state_dict.items()})
        self._apply(self.last_epoch)

    def __repr__(self):
        options = ", ".join(f"{k}={v}" for k, v in self.state_dict().items()
                            if k not in ("base_lrs", "_last_lr"))
        return f"{type(self).__name__}({options})"


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs: ``lr = base_lr * gamma**(epoch // step_size)``."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _check_positive_int(step_size, "step_size")
        self.gamma = _check_number(gamma, "gamma")
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr):
        return base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """Cosine decay from the base lr to ``eta_min`` over ``T_max`` epochs (SGDR, arXiv:1608.03983).

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``; after ``T_max`` the
    cosine continues (rises again), exactly like PyTorch's scheduler.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _check_positive_int(T_max, "T_max")
        self.eta_min = _check_number(eta_min, "eta_min")
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class LinearLR(LRScheduler):
    """Scale the lr linearly from ``start_factor`` to ``end_factor`` over ``total_iters`` epochs.

    ``lr = base_lr * (start + (end - start) * min(epoch, total_iters) / total_iters)``. With
    ``end_factor=1`` this is the linear warm-up of Goyal et al. (arXiv:1706.02677).
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        self.start_factor = _check_number(start_factor, "start_factor", 0.0, 1.0, high_inclusive=True)
        if self.start_factor == 0:
            raise ValueError("start_factor must be > 0 (as in PyTorch); use a small value such as 1e-3")
        self.end_factor = _check_number(end_factor, "end_factor", 0.0, 1.0, high_inclusive=True)
        self.total_iters = _check_positive_int(total_iters, "total_iters")
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr):
        progress = min(epoch, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * progress)


class SequentialLR(LRScheduler):
    """Run ``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]`` from its epoch 0, and so on.

    The child schedulers are only used as formulas (their ``lr_at``); step this scheduler, not them.
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        schedulers, milestones = list(schedulers), [int(m) for m in milestones]
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR needs one milestone fewer than schedulers; got {len(schedulers)} "
                             f"schedulers and milestones={milestones}")
        if milestones != sorted(milestones) or (milestones and milestones[0] < 1):
            raise ValueError(f"milestones must be increasing positive ints; got {milestones}")
        for scheduler in schedulers:
            if not isinstance(scheduler, LRScheduler) or scheduler.optimizer is not optimizer:
                raise ValueError("every scheduler must be an LRScheduler of the same optimizer")
        self._schedulers = schedulers
        self.milestones = milestones
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch, base_lr):
        index = bisect_right(self.milestones, epoch)           # which scheduler owns this epoch
        start = self.milestones[index - 1] if index > 0 else 0
        return self._schedulers[index].lr_at(epoch - start, base_lr)


def warmup_cosine(optimizer, warmup_steps, total_steps, start_factor=0.1, eta_min=0.0):
    """Linear warm-up for ``warmup_steps`` epochs, then cosine decay to ``eta_min`` at ``total_steps``.

    Returns a :class:`SequentialLR` of :class:`LinearLR` and :class:`CosineAnnealingLR` (PyTorch's
    recipe). The lr goes ``start_factor * base_lr -> base_lr`` linearly, reaches ``base_lr`` at epoch
    ``warmup_steps`` and ``eta_min`` at epoch ``total_steps``. ``warmup_steps=0`` gives plain cosine.
    """
    warmup_steps = int(warmup_steps)
    total_steps = _check_positive_int(total_steps, "total_steps")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}); got {warmup_steps}")
    cosine = CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps, eta_min=eta_min)
    if warmup_steps == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])
