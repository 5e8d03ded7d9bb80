"""Built-in SSL methods. Importing this package registers them (explicit imports, no folder scanning)."""

from nnssl.pretraining.methods import mae

__all__ = ["mae"]
