"""Built-in SSL methods. Importing this package registers them (explicit imports, no folder scanning)."""

from nnssl.pretraining.methods import byol, mae, modelsgenesis, simclr, sparkmae

__all__ = ["byol", "mae", "modelsgenesis", "simclr", "sparkmae"]
