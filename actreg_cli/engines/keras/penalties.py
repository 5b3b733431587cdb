"""Penalties as Keras calls them: `penalty_function` (one regularizer config -> a callable
tensor -> scalar, with the batch_sum / batch_mean semantics) and `combine` (several in one
slot). The keras engine's YAML models (engine.py) and Keras models of your own (own_model.py)
both attach these."""

from __future__ import annotations

from actreg_cli.config import Norm, Reduction, RegularizerConfig, Target, import_custom_function


def penalty_function(reg: RegularizerConfig):
    """A Keras-callable penalty (tensor -> scalar) for one regularizer.

    Keras >= 3.14 divides an activity penalty by the batch size itself; for `batch_sum` (Keras 2.3
    semantics) the penalty is multiplied by the batch size first so that the division cancels.
    """
    from keras import ops

    l1, l2 = reg.l1_factor, reg.l2_factor
    custom = import_custom_function(reg.function) if reg.norm is Norm.custom else None
    undo_batch_mean = reg.target is Target.activity and reg.reduction is Reduction.batch_sum

    def penalty(x):
        if custom is not None:
            total = reg.strength * ops.convert_to_tensor(custom(x), dtype=x.dtype)
        else:
            total = ops.zeros((), dtype=x.dtype)
            if l1:
                total = total + l1 * ops.sum(ops.abs(x))
            if l2:
                total = total + l2 * ops.sum(ops.square(x))
        if undo_batch_mean:
            total = total * ops.cast(ops.shape(x)[0], x.dtype)
        return total

    return penalty


def combine(penalties):
    """One callable summing several penalties (Keras takes one regularizer per slot)."""
    if not penalties:
        return None
    if len(penalties) == 1:
        return penalties[0]

    def total(x):
        out = penalties[0](x)
        for p in penalties[1:]:
            out = out + p(x)
        return out

    return total
