"""Class names are case-insensitive identifiers: the one rule every stage joins them by.

A class called ``1BXN`` in a SHREC particle list, ``1bxn.pdb`` in a structure folder and ``1Bxn``
in a user's affinity CSV is one class. The structures stage names classes by :func:`class_key`
(lower case), so the files it writes, the affinity matrix and the simulated particle lists agree;
the joins that meet names from elsewhere (a user's affinity CSV, extract.class_case upper/keep)
go through :func:`align_names`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from affinity_vae.errors import InputError


def class_key(name: object) -> str:
    """The canonical (lower-case, stripped) key of a class name."""
    return str(name).strip().lower()


def align_names(wanted: Iterable[str], available: Sequence[str], where: str = "class names"
                ) -> tuple[dict[str, str], list[str]]:
    """Match ``wanted`` class names to ``available`` ones case-insensitively.

    Returns:
        ({wanted name: available name} for every match, [wanted names with no match]).
    Raises:
        InputError: two ``available`` names differ only in case (ambiguous), naming ``where``
            (the file they come from).
    """
    by_key: dict[str, str] = {}
    for a in available:
        k = class_key(a)
        if k in by_key and by_key[k] != a:
            raise InputError(f"{where}: class names '{by_key[k]}' and '{a}' differ only in case "
                             f"(class names match case-insensitively) -- keep one of them")
        by_key[k] = a
    found, missing = {}, []
    for w in wanted:
        a = by_key.get(class_key(w))
        if a is None:
            missing.append(w)
        else:
            found[w] = a
    return found, missing
