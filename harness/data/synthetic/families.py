"""The edit families of the embedded benchmark, version 2, by name: version 1's classic edits
and two-step compounds (the caption spells out every value) and the reference-dependent
families of ``reference_families`` (the reference supplies a value the caption leaves unsaid).
"""

from __future__ import annotations

from harness.data.synthetic.programs import CLASSIC, Classic, Compound, Family
from harness.data.synthetic.reference_families import REFERENCE_FAMILIES

CLASSIC_FAMILIES: tuple[Family, ...] = (*(Classic(t) for t in CLASSIC), Compound())
FAMILIES: dict[str, Family] = {family.name: family for family in (*CLASSIC_FAMILIES, *REFERENCE_FAMILIES)}
