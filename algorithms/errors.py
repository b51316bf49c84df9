"""Errors the algorithms raise."""


class NonFiniteError(FloatingPointError):
    """A loss, gradient, parameter or input became NaN/inf; the update was rejected."""
