"""The package version (`tallformer.__version__`), in a module of its own so that any layer
can read it without importing the package root (whose lazy attributes reach the engine)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
