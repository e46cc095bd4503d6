"""How a chapter hands the numbers it computed to its prose: MyST-NB's ``glue``, one helper for all.

A sentence of a chapter cites a number by name through MyST-NB's glue text role (the name
``rs_picked_acc`` with the format ``.3f``, say).  :func:`glue_fields`
glues the fields of a summary (a dataclass of ``ncmse.summary`` or ``ncmse.mean_geometry``) under
their own names with one prefix, so that the name in the prose says which field it is and cannot drift
from it; :func:`glue_values` glues named values that are not a summary's fields.  Nothing is displayed
where the cell runs.
"""

from __future__ import annotations

import dataclasses

__all__ = ["glue_fields", "glue_values", "field_values"]


def field_values(obj, *names: str) -> dict:
    """``{name: getattr(obj, name)}`` for ``names``, or for every field of the dataclass ``obj`` when
    none are given; a ``ncmse.variants.Variant`` value becomes its label (what prose cites)."""
    if not names:
        if not dataclasses.is_dataclass(obj):
            raise TypeError(f"name the attributes to glue: {type(obj).__name__} is not a dataclass")
        names = tuple(f.name for f in dataclasses.fields(obj))
    out = {}
    for name in names:
        value = getattr(obj, name)
        out[name] = getattr(value, "label", value) if type(value).__name__ == "Variant" else value
    return out


def glue_fields(obj, prefix: str, *names: str) -> dict:
    """Glue ``field_values(obj, *names)`` as ``prefix + name`` each; returns what was glued."""
    return glue_values(**{prefix + k: v for k, v in field_values(obj, *names).items()})


def glue_values(**values) -> dict:
    """Glue each value under its keyword (``display=False``); returns ``values``."""
    from myst_nb import glue

    for name, value in values.items():
        glue(name, value, display=False)
    return values
