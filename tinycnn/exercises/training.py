"""Exercises on training: the softmax cross-entropy loss and its gradient, one step of SGD with momentum.

References: :class:`tinycnn.losses.CrossEntropyLoss` and :class:`tinycnn.optim.SGD` (PyTorch's rules);
the solutions are what a student writes in NumPy.
"""
import numpy as np

from ..losses import CrossEntropyLoss
from ..nn.module import Parameter
from ..optim import SGD
from .checker import FLOAT_DTYPES, Exercise, Mistake, register

TOPIC = "training"


# ------------------------------------------------------------------------------- softmax cross-entropy
def cross_entropy(logits, targets):
    """Mean softmax cross-entropy of (N, K) logits against (N,) class indices, and its gradient."""
    N, K = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)         # exp never overflows, softmax unchanged
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))   # log softmax, (N, K)
    loss = -log_probs[np.arange(N), targets].mean()             # -log p(true class), averaged over the batch
    grad = np.exp(log_probs)                                     # softmax ...
    grad[np.arange(N), targets] -= 1                             # ... minus the one-hot target
    return float(loss), grad / N                                 # the mean's 1/N reaches every gradient


def _cross_entropy_reference(logits, targets):
    loss_function = CrossEntropyLoss()
    loss = loss_function(logits, targets)
    return float(loss), loss_function.backward()


def _cross_entropy_cases(rng):
    """Two samples of three classes by hand, equal logits, huge logits (overflow), then random batches.

    float64 logits: the loss is one number, compared to 1e-9 relative (see checker.SCALAR_RTOL)."""
    cases = [dict(logits=np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), targets=np.array([0, 2])),
             dict(logits=np.zeros((1, 4)), targets=np.array([3])),
             dict(logits=np.array([[1000.0, 0.0], [0.0, -1000.0]]), targets=np.array([1, 0]))]
    for _ in range(5):
        N, K = int(rng.integers(1, 9)), int(rng.integers(2, 11))
        cases.append(dict(logits=rng.standard_normal((N, K)) * 3, targets=rng.integers(0, K, size=N)))
    return cases


def _wrong_cross_entropy(mean_grad=True, subtract_one_hot=True, grad_sign=1, batch_softmax=False):
    """:func:`cross_entropy` with one wrong idea (see the hints)."""
    def wrong(logits, targets):
        N = logits.shape[0]
        axis = 0 if batch_softmax else 1
        shifted = logits - logits.max(axis=axis, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        grad = np.exp(log_probs)
        if subtract_one_hot:
            grad[np.arange(N), targets] -= 1
        return float(-log_probs[np.arange(N), targets].mean()), grad_sign * grad / (N if mean_grad else 1)
    return wrong


register(Exercise(
    name="cross_entropy", topic=TOPIC,
    statement="mean softmax cross-entropy of logits and class indices, and its gradient softmax - onehot",
    signature="cross_entropy(logits, targets) -> (loss, grad_logits)   # logits (N, K) float64, targets (N,) ints",
    reference=_cross_entropy_reference, solution=cross_entropy, make_cases=_cross_entropy_cases,
    output_name="(loss, grad_logits)",
    mistakes=(
        Mistake("you forgot the 1/N of the mean in the gradient: the loss averages N samples, so each sample's "
                "softmax - onehot is divided by N", _wrong_cross_entropy(mean_grad=False)),
        Mistake("you forgot to subtract the one-hot target: d loss / d z = softmax(z) - onehot(y)",
                _wrong_cross_entropy(subtract_one_hot=False)),
        Mistake("your gradient has the wrong sign: d loss / d z = softmax(z) - onehot(y) (the loss falls when the "
                "true class's logit rises)", _wrong_cross_entropy(grad_sign=-1)),
        Mistake("you took the softmax over the batch (axis 0): each sample's K logits are normalised on their "
                "own, axis=1", _wrong_cross_entropy(batch_softmax=True)),
    )))


# ------------------------------------------------------------------------------------ SGD with momentum
def sgd_momentum_step(param, grad, buffer, lr, momentum=0.9, weight_decay=0.0):
    """One step of PyTorch's SGD: returns (new param, new momentum buffer); ``buffer`` None on the first step."""
    grad = grad + weight_decay * param                           # L2 penalty: its gradient is weight_decay * p
    if buffer is None:
        buffer = grad.copy()                                     # the buffer starts at the first gradient
    else:
        buffer = momentum * buffer + grad                        # a running sum of past gradients
    return param - lr * buffer, buffer                           # the learning rate scales the step


def _sgd_reference(param, grad, buffer, lr, momentum=0.9, weight_decay=0.0):
    """``tinycnn.optim.SGD`` on one parameter, its momentum buffer set to ``buffer``."""
    parameter = Parameter(param)
    parameter.grad = grad.copy()
    optimizer = SGD([parameter], lr=lr, momentum=momentum, weight_decay=weight_decay)
    if buffer is not None:
        optimizer.state_of(parameter)["momentum_buffer"] = buffer.copy()
    optimizer.step()
    return parameter.data, optimizer.state_of(parameter)["momentum_buffer"]


def _sgd_cases(rng):
    cases = [dict(param=np.array([1.0, -2.0]), grad=np.array([0.5, 0.5]), buffer=None, lr=0.1, momentum=0.9,
                  weight_decay=0.0),
             dict(param=np.array([1.0, -2.0]), grad=np.array([0.5, 0.5]), buffer=np.array([1.0, -1.0]), lr=0.1,
                  momentum=0.9, weight_decay=0.0),
             dict(param=np.array([[2.0, 0.0]], np.float32), grad=np.array([[0.0, 1.0]], np.float32),
                  buffer=np.array([[1.0, 1.0]], np.float32), lr=0.5, momentum=0.5, weight_decay=0.1)]
    for _ in range(6):
        shape = tuple(int(v) for v in rng.integers(1, 5, size=int(rng.integers(1, 4))))
        dtype = FLOAT_DTYPES[int(rng.integers(2))]
        buffer = rng.standard_normal(shape).astype(dtype) if rng.random() < 0.7 else None
        cases.append(dict(param=rng.standard_normal(shape).astype(dtype), grad=rng.standard_normal(shape).astype(dtype),
                          buffer=buffer, lr=float(rng.choice([0.01, 0.1, 0.5])),
                          momentum=float(rng.choice([0.5, 0.9])), weight_decay=float(rng.choice([0.0, 1e-2, 0.1]))))
    return cases


def _wrong_sgd(decay=True, decay_after=False, lr_in_buffer=False, sign=1, zero_start=False):
    """:func:`sgd_momentum_step` with one wrong idea (see the hints)."""
    def wrong(param, grad, buffer, lr, momentum=0.9, weight_decay=0.0):
        if decay and not decay_after:
            grad = grad + weight_decay * param
        step = lr * grad if lr_in_buffer else grad
        if buffer is None:
            buffer = step.copy() if not zero_start else (1 - momentum) * step
        else:
            buffer = momentum * buffer + step
        update = buffer + (weight_decay * param if decay_after else 0)
        new_param = param - sign * (update if lr_in_buffer else lr * update)
        return new_param.astype(param.dtype), buffer.astype(param.dtype)
    return wrong


register(Exercise(
    name="sgd_momentum_step", topic=TOPIC,
    statement="one step of stochastic gradient descent with momentum and weight decay (PyTorch's rule)",
    signature="sgd_momentum_step(param, grad, buffer, lr, momentum=0.9, weight_decay=0.0) -> (new_param, "
              "new_buffer)   # buffer: None on the first step",
    reference=_sgd_reference, solution=sgd_momentum_step, make_cases=_sgd_cases,
    output_name="(new_param, new_buffer)",
    mistakes=(
        Mistake("you stepped uphill: gradient descent subtracts, p - lr * buffer", _wrong_sgd(sign=-1)),
        Mistake("you forgot the weight decay: it adds weight_decay * p to the gradient before the momentum",
                _wrong_sgd(decay=False)),
        Mistake("you added the weight decay after the momentum: PyTorch adds weight_decay * p to the gradient, "
                "so it enters the buffer too", _wrong_sgd(decay_after=True)),
        Mistake("you put the learning rate inside the buffer (v = m*v + lr*g, p -= v): PyTorch's buffer sums raw "
                "gradients, b = m*b + g, and the step is p -= lr * b (they differ when lr changes)",
                _wrong_sgd(lr_in_buffer=True)),
        Mistake("on the first step PyTorch's buffer is the gradient itself, not (1 - momentum) * gradient",
                _wrong_sgd(zero_start=True)),
    )))
