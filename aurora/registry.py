"""The adapter methods: one :func:`register_method` call per layer class; :data:`METHODS` lists their names.

``METHODS`` is a live, read-only view of the registry, so :mod:`aurora.config` can validate against it
without importing the layer classes (``aurora.layers`` imports the config). A new method is one
:class:`aurora.layers.AdapterLayer` subclass plus ``register_method("name", TheLayer)``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["METHODS", "register_method", "layer_class"]

_LAYER_CLASSES: dict[str, type] = {}


class _MethodNames(Sequence):
    """The registered method names in registration order (a tuple-like view that follows the registry)."""

    def __getitem__(self, index):
        return tuple(_LAYER_CLASSES)[index]

    def __len__(self) -> int:
        return len(_LAYER_CLASSES)

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) and not isinstance(other, str) else other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


METHODS: Sequence[str] = _MethodNames()


def register_method(name: str, layer_class: type) -> type:
    """Make ``AdapterConfig(method=name)`` build ``layer_class`` (an ``AdapterLayer`` subclass); returns the class.

    Sets ``layer_class.method = name``. Registering a taken name for another class raises ``ValueError``.
    """
    from .layers import AdapterLayer  # the layers module registers the built-in methods on import

    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a method name must be a non-empty identifier string, got {name!r}")
    if not (isinstance(layer_class, type) and issubclass(layer_class, AdapterLayer)):
        raise ValueError(f"layer_class must be a subclass of aurora.AdapterLayer, got {layer_class!r}")
    if _LAYER_CLASSES.get(name, layer_class) is not layer_class:
        raise ValueError(f"method {name!r} is already registered for {_LAYER_CLASSES[name].__name__}")
    _LAYER_CLASSES[name] = layer_class
    layer_class.method = name
    return layer_class


def layer_class(name: str) -> type:
    """The layer class registered for the method ``name``."""
    if name not in _LAYER_CLASSES:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {name!r}")
    return _LAYER_CLASSES[name]
