"""Published electrode sites as data: one CSV per scheme, each site on a mesh triangle with its skin frame.

Every recording site (``editors/electrodes/data/electrode_sites_<scheme>.csv``) is a MediaPipe landmark
triangle with barycentric weights for the centre, a ring of nearby landmarks whose affine fit gives the
skin's tangents and normal, the muscle-fibre angle for a bipolar pair, and the publication it comes from.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "data"
SCHEMES: tuple[str, ...] = ("fridlund_cacioppo", "kuramoto", "custom")
SIDES: tuple[str, ...] = ("left", "right", "midline")
MONTAGES: tuple[str, ...] = ("bipolar", "monopolar")
WIRE_EXITS: tuple[str, ...] = ("left", "right", "top")  # toward that ear (subject's side), or upwards
TABLE_COLUMNS: tuple[str, ...] = (
    "site_id", "muscle", "side", "montage", "fibre_angle_deg", "tri_a", "tri_b", "tri_c", "w_a", "w_b", "w_c",
    "ring", "ring_du", "ring_dv", "wire_exit", "source",
)  # fmt: skip

def load_site_table(source: str | Path) -> list[dict[str, Any]]:
    """Read a site table: a scheme name ("fridlund_cacioppo", "kuramoto") or a CSV path.

    Lines starting with "#" are comments. Returns one dict per site with parsed numbers.
    """
    path = Path(source)
    if str(source) in SCHEMES[:2]:
        path = DATA_DIR / f"electrode_sites_{source}.csv"
    if not path.is_file():
        raise ValueError(f"table={str(source)!r}: no such site table (schemes: {', '.join(SCHEMES[:2])})")
    with path.open(newline="") as fh:
        reader = csv.DictReader(line for line in fh if not line.startswith("#"))
        rows = list(reader)
        missing = [c for c in TABLE_COLUMNS if c not in (reader.fieldnames or [])]
    if missing or not rows:
        raise ValueError(f"table={str(source)!r}: needs rows with columns {TABLE_COLUMNS}; missing {missing}")
    for row in rows:
        for key, allowed in (("side", SIDES), ("montage", MONTAGES), ("wire_exit", WIRE_EXITS)):
            if row[key] not in allowed:
                raise ValueError(f"{key}={row[key]!r} in {path.name} row {row['site_id']}: allowed {allowed}")
        for key in ("tri_a", "tri_b", "tri_c"):
            row[key] = int(row[key])
        for key in ("w_a", "w_b", "w_c", "fibre_angle_deg"):
            row[key] = float(row[key])
        row["ring"] = [int(v) for v in row["ring"].split()]
        for key in ("ring_du", "ring_dv"):
            row[key] = [float(v) for v in row[key].split()]
        if not len(row["ring"]) == len(row["ring_du"]) == len(row["ring_dv"]) >= 3:
            raise ValueError(
                f"ring={row['ring']!r} in {path.name} row {row['site_id']}: needs >= 3 landmarks "
                "with as many ring_du and ring_dv weights"
            )
    return rows


def _norm_name(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def select_sites(rows: list[dict[str, Any]], sites: Sequence[Any] | None) -> list[dict[str, Any]]:
    """Pick rows by site id ("F19") or by (muscle, side) pairs; side may be "both". None keeps all.

    A (muscle, side) pair found in several tables takes the first table's sites.
    """
    if sites is None:
        return list(rows)
    by_id = {r["site_id"].lower(): r for r in rows}
    chosen: list[dict[str, Any]] = []
    for item in sites:
        if isinstance(item, str):
            if item.lower() not in by_id:
                allowed = ", ".join(r["site_id"] for r in rows)
                raise ValueError(f"sites={item!r}: unknown site id; allowed: {allowed}")
            matches = [by_id[item.lower()]]
        else:
            muscle, side = (_norm_name(v) for v in item)
            sides = ("left", "right") if side == "both" else (side,)
            if side not in (*SIDES, "both"):
                raise ValueError(f"sites side={side!r} for muscle {muscle!r}: allowed {(*SIDES, 'both')}")
            matches = [r for r in rows if r["muscle"] == muscle and r["side"] in sides]
            if not matches:
                known = sorted({f"({r['muscle']}, {r['side']})" for r in rows})
                raise ValueError(f"sites=({muscle!r}, {side!r}): no such site; allowed: {', '.join(known)}")
            # a muscle in several tables: the first table's site (Fridlund & Cacioppo before Kuramoto)
            matches = [r for r in matches if r.get("scheme") == matches[0].get("scheme")]
        chosen += [m for m in matches if m not in chosen]
    if not chosen:
        raise ValueError("sites=[]: select at least one site (or pass sites=None for the whole scheme)")
    return chosen
