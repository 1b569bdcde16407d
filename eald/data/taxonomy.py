"""NFBL taxonomy (iMiGUE numbering, as used by EALD) and label vocabulary."""

from __future__ import annotations

LABELS: tuple[str, ...] = ("positive", "negative")
POSITIVE = "positive"  # the paper's positive class: a won match (eqs. 3-6)

# iMiGUE's numbering. N32 and N33 occur in EALD but their names were never published, so they
# keep placeholder names rather than invented ones.
NFBL_CLASSES: dict[str, str] = {
    "N0": "turtle neck",
    "N1": "bulging face / deep breath",
    "N2": "touching hat",
    "N3": "touching or scratching head",
    "N4": "touching or scratching forehead",
    "N5": "covering face",
    "N6": "rubbing eyes",
    "N7": "touching facial parts",
    "N8": "touching ears",
    "N9": "biting nails",
    "N10": "touching jaw",
    "N11": "touching or scratching neck",
    "N12": "playing or adjusting hair",
    "N13": "buckle button / pulling collar / adjusting tie",
    "N14": "touching suprasternal notch",
    "N15": "scratching back",
    "N16": "folding arms",
    "N17": "dusting off clothes",
    "N18": "arms behind body",
    "N19": "moving torso",
    "N20": "sitting straightly",
    "N21": "scratching or touching arms",
    "N22": "rubbing or holding hands",
    "N23": "crossing fingers",
    "N24": "minaret gesture",
    "N25": "playing or manipulating objects",
    "N26": "hold back arms",
    "N27": "head up",
    "N28": "pressing lips",
    "N29": "arms akimbo",
    "N30": "shaking shoulders",
    "N31": "illustrative hand gestures",
    "N32": "unnamed (N32)",
    "N33": "unnamed (N33)",
    "N34": "touching nose",
}


def nfbl_name(class_id: str) -> str:
    """Human-readable behaviour name; raises KeyError naming the id for unknown classes."""
    try:
        return NFBL_CLASSES[class_id]
    except KeyError:
        raise KeyError(f"unknown NFBL class {class_id!r} (expected N0..N34)") from None


def class_order(class_id: str) -> int:
    """Numeric order of an NFBL id, so N10 sorts after N9."""
    return int(class_id[1:])
