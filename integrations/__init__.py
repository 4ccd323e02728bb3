"""Thin adapters to retrieval stacks (installed as ``vc2l_retriever.integrations``).

Each adapter imports its framework lazily and, without its extra, raises an ImportError naming the install command.
"""

from __future__ import annotations


def require(extra: str, *modules: str) -> None:
    """Import ``modules`` or raise an ImportError that says which extra to install."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(
                f"this adapter needs {name!r}: pip install 'vc2l-retriever[{extra}]'"
            ) from e
