"""Eight-float SIMD values for numba kernels: a value type and a few intrinsics, nothing more.

Why: numba exposes no vector type, and LLVM's auto-vectoriser only handles plain loops. The small
dense products of attention (scores and mixing: 16-deep sums over 21 x 21 nodes, for every sample)
need register blocking, several accumulators reused across one load, which no loop form made LLVM
emit (the loops ran scalar, or with a load or two per FMA). With `F32x8` a kernel holds
vectors in registers and says exactly which loads and fused multiply-adds it wants. The type
lowers to LLVM's <8 x float>: AVX2 registers on this project's CPU, two SSE/NEON registers
elsewhere (LLVM legalises it), so the kernels stay portable.

All loads and stores are unaligned, of 8 consecutive float32 from a contiguous array's data at a
flat element offset; callers keep offsets in range (no bounds checks, like the kernels' own
`boundscheck=False`).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

#: Lanes of one vector.
WIDTH = 8
_VEC = ir.VectorType(ir.FloatType(), WIDTH)
_IVEC = ir.VectorType(ir.IntType(32), WIDTH)


class F32x8(types.Type):
    """numba type of a vector of 8 float32 held in a register."""

    def __init__(self) -> None:
        super().__init__(name="F32x8")


f32x8 = F32x8()


@register_model(F32x8)
class _F32x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _is_f32_array(ty) -> bool:
    return isinstance(ty, types.Array) and ty.dtype == types.float32 and ty.layout == "C"


def _vec_ptr(context, builder, aryty, ary, index):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [index]), _VEC.as_pointer())


def _llvm_call(builder, name: str, args, ret=_VEC):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


@intrinsic
def load8(typingctx, ary, index):
    """ary.flat[index:index + 8] as a vector."""
    if not (_is_f32_array(ary) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_vec_ptr(context, builder, sig.args[0], *args), align=4)

    return f32x8(ary, index), codegen


@intrinsic
def store8(typingctx, ary, index, vec):
    """ary.flat[index:index + 8] = vec."""
    if not (_is_f32_array(ary) and isinstance(index, types.Integer) and vec == f32x8):
        return None

    def codegen(context, builder, sig, args):
        builder.store(args[2], _vec_ptr(context, builder, sig.args[0], args[0], args[1]), align=4)
        return context.get_dummy_value()

    return types.none(ary, index, vec), codegen


@intrinsic
def splat8(typingctx, x):
    """A vector of 8 copies of the scalar x."""
    if not isinstance(x, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.float32)
        v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), v, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(v, ir.Constant(_VEC, ir.Undefined), ir.Constant(_IVEC, [0] * WIDTH))

    return f32x8(x), codegen


@intrinsic
def fma8(typingctx, a, b, c):
    """a * b + c, fused."""
    if not (a == b == c == f32x8):
        return None

    def codegen(context, builder, sig, args):
        return _llvm_call(builder, "llvm.fma.v8f32", args)

    return f32x8(a, b, c), codegen


def _elementwise(doc: str, emit):
    @intrinsic
    def op(typingctx, a, b):
        if not (a == b == f32x8):
            return None

        def codegen(context, builder, sig, args):
            return emit(builder, *args)

        return f32x8(a, b), codegen

    op.__doc__ = doc
    return op


add8 = _elementwise("a + b", lambda b, x, y: b.fadd(x, y))
sub8 = _elementwise("a - b", lambda b, x, y: b.fsub(x, y))
mul8 = _elementwise("a * b", lambda b, x, y: b.fmul(x, y))
div8 = _elementwise("a / b", lambda b, x, y: b.fdiv(x, y))
max8 = _elementwise("max(a, b) (maxnum: one vmaxps)", lambda b, x, y: _llvm_call(b, "llvm.maxnum.v8f32", [x, y]))


@intrinsic
def floor8(typingctx, a):
    """Elementwise floor."""
    if a != f32x8:
        return None

    def codegen(context, builder, sig, args):
        return _llvm_call(builder, "llvm.floor.v8f32", args)

    return f32x8(a), codegen


@intrinsic
def exp2i8(typingctx, n):
    """2 ** n for integer-valued n in [-126, 127] (put in the exponent bits)."""
    if n != f32x8:
        return None

    def codegen(context, builder, sig, args):
        i = builder.fptosi(args[0], _IVEC)
        i = builder.shl(builder.add(i, ir.Constant(_IVEC, [127] * WIDTH)), ir.Constant(_IVEC, [23] * WIDTH))
        return builder.bitcast(i, _VEC)

    return f32x8(n), codegen


@intrinsic
def vec8(typingctx, a0, a1, a2, a3, a4, a5, a6, a7):
    """A vector of 8 float32 scalars: how a kernel gathers scattered values (LLVM lowers a vector
    gather to separate loads on this project's CPU anyway)."""
    if not all(a == types.float32 for a in (a0, a1, a2, a3, a4, a5, a6, a7)):
        return None

    def codegen(context, builder, sig, args):
        v = ir.Constant(_VEC, ir.Undefined)
        for i, a in enumerate(args):
            v = builder.insert_element(v, a, ir.Constant(ir.IntType(32), i))
        return v

    return f32x8(a0, a1, a2, a3, a4, a5, a6, a7), codegen


@intrinsic
def hsum8(typingctx, a):
    """The sum of the 8 lanes, as a float32 scalar (in any order)."""
    if a != f32x8:
        return None

    def codegen(context, builder, sig, args):
        total = _llvm_call(builder, "llvm.vector.reduce.fadd.v8f32", [ir.Constant(ir.FloatType(), 0.0), args[0]],
                           ret=ir.FloatType())
        total.fastmath.add("reassoc")
        return total

    return types.float32(a), codegen
