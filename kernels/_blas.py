"""Calling NumPy's BLAS (``cblas_?gemm``, ``cblas_?gemv``) from compiled kernels by the function's address.

A numba kernel can call a C function passed to it as a ctypes function object, but every call of
the kernel then pays for that argument: numba's dispatcher types it and reads its address through
``ctypes.cast`` (measured on a 2-core AMD EPYC: 4.8 us for a call of an empty kernel with a ctypes
function argument, 0.7 us without). A batch-1 MobileNet V3-Small forward makes ~45 such calls.

Here the kernel takes the address as a plain integer instead, and :func:`cblas_gemm` /
:func:`cblas_gemv` are numba *intrinsics*: at compile time they emit an LLVM call through that integer
turned into a pointer to a function of the CBLAS prototype. The BLAS's integer width (32 or 64 bits,
:func:`kernels._gemm._find_cblas` finds which) comes in as the type of the argument ``integer``, a
zero of ``np.int32`` or ``np.int64``: it is part of the kernel's signature, so a cached kernel is never
reused for a BLAS of the other width. The real type (``float`` for ``sgemm``, ``double`` for ``dgemm``)
is the type of ``alpha``, so pass ``alpha`` and ``beta`` in the arrays' dtype. Matrices are passed as
addresses (``array.ctypes.data``).

Under ``NUMBA_DISABLE_JIT=1`` the two are plain Python functions making the same call through ctypes.
"""
import ctypes

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_REALS = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}
_INTEGERS = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64}


def function_address(function):
    """The address of a ctypes function, as a Python int (what the kernels take); looked up once."""
    known = _ADDRESSES.get(id(function))
    if known is None or known[0] is not function:
        known = _ADDRESSES[id(function)] = (function, ctypes.cast(function, ctypes.c_void_p).value)
    return known[1]


_ADDRESSES = {}     # id(function) -> (function, its address); the function is kept, so its id stays its own


#: the CBLAS prototypes, one letter per argument: ``e`` an enum (C int), ``i`` the BLAS's integer, ``r`` a real,
#: ``p`` a pointer. gemm: order, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc
GEMM_ARGUMENTS = "eeeiiirpipirpi"
#: gemv: order, trans, M, N, alpha, A, lda, x, incx, beta, y, incy
GEMV_ARGUMENTS = "eeiirpipirpi"


def cblas_prototype(argument_kinds, integer, real):
    """The ctypes function type of a CBLAS routine: ``argument_kinds`` as :data:`GEMM_ARGUMENTS`, ``integer``
    and ``real`` ctypes types (``c_int32``/``c_int64``, ``c_float``/``c_double``); it returns nothing."""
    ctype = {"e": ctypes.c_int, "i": integer, "r": real, "p": ctypes.c_void_p}
    return ctypes.CFUNCTYPE(None, *(ctype[kind] for kind in argument_kinds))


def _python_call(address, argument_kinds, integer, real, arguments):
    """Call the C function at ``address`` from Python (``integer``, ``real``: values of the types it takes)."""
    prototype = cblas_prototype(argument_kinds, _INTEGERS[np.dtype(type(integer))], _REALS[np.dtype(type(real))])
    prototype(address)(*arguments)


def _llvm_call(context, builder, signature, arguments, argument_kinds):
    """Emit the call of an intrinsic whose arguments are ``(address, integer, *call arguments)``."""
    integer_type = signature.args[1]
    blas_integer = context.get_value_type(integer_type)
    real_type = signature.args[2 + argument_kinds.index("r")]
    llvm_types = {"e": ir.IntType(32), "i": blas_integer, "r": context.get_value_type(real_type),
                  "p": ir.IntType(8).as_pointer()}
    function_type = ir.FunctionType(ir.VoidType(), [llvm_types[kind] for kind in argument_kinds])
    function = builder.inttoptr(arguments[0], function_type.as_pointer())
    values = []
    for kind, value, value_type in zip(argument_kinds, arguments[2:], signature.args[2:]):
        if kind == "p":
            values.append(builder.inttoptr(value, llvm_types["p"]))
        elif kind == "e":
            values.append(context.cast(builder, value, value_type, types.int32))
        elif kind == "i":
            values.append(context.cast(builder, value, value_type, integer_type))
        else:
            values.append(context.cast(builder, value, value_type, real_type))
    builder.call(function, values)
    return context.get_dummy_value()


if numba.config.DISABLE_JIT:
    def cblas_gemm(address, integer, order, trans_a, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc):
        """``C = alpha * op(A) @ op(B) + beta * C`` by the ``cblas_?gemm`` at ``address`` (plain Python)."""
        _python_call(address, GEMM_ARGUMENTS, integer, alpha,
                     (order, trans_a, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc))

    def cblas_gemv(address, integer, order, trans, M, N, alpha, a, lda, x, incx, beta, y, incy):
        """``y = alpha * op(A) @ x + beta * y`` by the ``cblas_?gemv`` at ``address`` (plain Python)."""
        _python_call(address, GEMV_ARGUMENTS, integer, alpha, (order, trans, M, N, alpha, a, lda, x, incx, beta, y,
                                                            incy))
else:
    @intrinsic
    def cblas_gemm(typingctx, address, integer, order, trans_a, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, c,
                   ldc):
        """``C = alpha * op(A) @ op(B) + beta * C`` by the ``cblas_?gemm`` at ``address`` (row-major ``order``
        101, ``trans`` 111 / 112; ``a``, ``b``, ``c`` addresses; integers of ``integer``'s type)."""
        signature = types.void(address, integer, order, trans_a, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, c,
                               ldc)
        return signature, lambda context, builder, sig, args: _llvm_call(context, builder, sig, args, GEMM_ARGUMENTS)

    @intrinsic
    def cblas_gemv(typingctx, address, integer, order, trans, M, N, alpha, a, lda, x, incx, beta, y, incy):
        """``y = alpha * op(A) @ x + beta * y`` by the ``cblas_?gemv`` at ``address`` (arguments as
        :func:`cblas_gemm`'s)."""
        signature = types.void(address, integer, order, trans, M, N, alpha, a, lda, x, incx, beta, y, incy)
        return signature, lambda context, builder, sig, args: _llvm_call(context, builder, sig, args, GEMV_ARGUMENTS)
