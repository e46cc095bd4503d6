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

__all__ = ["glue_fields", "glue_values", "field_values", "collapse_history_sentence"]


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


def collapse_history_sentence(history: list[dict], *, terminal: float = 0.99) -> str:
    """What a history of :func:`ncmse.collapse.measure_collapse` dicts (one per epoch, with ``"epoch"``)
    says from its first epoch to its last: NC1, the accuracy and NC4_ncc, each with whether it fell or
    rose, and whether the network reached the terminal phase (accuracy ≥ ``terminal``); where it did not
    but NC1 fell more than threefold, that its features are on their way to collapse (the page "Measure
    collapse in your own network")."""
    first, last = history[0], history[-1]

    def went(key):
        return "fell" if last[key] < first[key] else "rose"

    text = (f"Over {len(history)} epochs on {last['N']} images, NC1 {went('NC1')} from {first['NC1']:.3g} to "
            f"{last['NC1']:.3g}, and the training accuracy {went('accuracy')} from {first['accuracy']:.3f} to "
            f"{last['accuracy']:.3f}. NC4_ncc {went('NC4_ncc')} from {first['NC4_ncc']:.3f} to "
            f"{last['NC4_ncc']:.3f}. ")
    if last["accuracy"] >= terminal:
        return text + "The network fits its training images: it is in the terminal phase."
    text += f"The network has not reached the terminal phase on this budget (training accuracy below {terminal:g})"
    if last["NC1"] < first["NC1"] / 3:
        return text + "; its features are on their way to collapse, NC1 falling as the images are fitted."
    return text + "."
