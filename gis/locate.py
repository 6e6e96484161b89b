"""Which grid a point stands in: many points against the active layouts' grids at once.

The dispatcher console names the grid of every vehicle it shows (2,000 of them in a snapshot, a
few hundred every second on the live stream). One point-in-polygon query per vehicle in the
database costs ~0.35 ms each (every grid is a polygon of ~130 vertices, detoasted per call), so
the answer is kept in memory instead: an STRtree of the grids, queried with all points in one
vectorised call.

Layouts may nest (a township's own layout inside the county's): where several grids cover a
point, the grid of the most specific layout wins (``priority``: the longer area-code prefix),
then the lower grid code, so the answer never depends on row order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray

__all__ = ["GridIndex"]


@dataclass(frozen=True)
class GridIndex:
    """Grids (codes, polygons in EPSG:4326, priorities) with a spatial index over them.

    Parameters
    ----------
    codes
        Grid codes, one per geometry.
    geoms
        The grids' polygons (shapely geometries, WGS-84 lon/lat).
    priority
        Larger wins where grids overlap (the layout's area-code prefix length); default 0.
    """

    codes: NDArray[np.object_]
    geoms: NDArray[np.object_]
    priority: NDArray[np.int64]
    tree: shapely.STRtree = field(repr=False)

    @classmethod
    def build(
        cls, codes: ArrayLike, geoms: ArrayLike, priority: ArrayLike | None = None
    ) -> GridIndex:
        """The index of ``geoms``; raises ValueError when the arrays differ in length."""
        code_arr = np.asarray(codes, dtype=object)
        geom_arr = np.asarray(geoms, dtype=object)
        prio = (
            np.zeros(len(code_arr), np.int64)
            if priority is None
            else np.asarray(priority, dtype=np.int64)
        )
        if not len(code_arr) == len(geom_arr) == len(prio):
            raise ValueError(
                f"codes ({len(code_arr)}), geometries ({len(geom_arr)}) and priorities "
                f"({len(prio)}) differ in length"
            )
        shapely.prepare(geom_arr)  # repeated point tests against the same polygons
        return cls(code_arr, geom_arr, prio, shapely.STRtree(geom_arr))

    def __len__(self) -> int:
        return len(self.codes)

    def locate(self, lon: ArrayLike, lat: ArrayLike) -> NDArray[np.object_]:
        """The code of the grid covering each point (boundary included), None where none does.

        Parameters
        ----------
        lon, lat
            Degrees, WGS-84; equal lengths. NaN coordinates are in no grid.
        """
        x = np.asarray(lon, dtype=np.float64)
        y = np.asarray(lat, dtype=np.float64)
        if x.shape != y.shape:
            raise ValueError(f"lon ({x.shape}) and lat ({y.shape}) differ in shape")
        out = np.full(x.shape, None, dtype=object)
        if x.size == 0 or len(self) == 0:
            return out
        points = shapely.points(x, y)
        hit_point, hit_grid = self.tree.query(points, predicate="covered_by")
        if hit_point.size == 0:
            return out
        # per point: highest priority first, then the lowest code
        order = np.lexsort((self.codes[hit_grid].astype(str), -self.priority[hit_grid], hit_point))
        first = order[np.r_[True, hit_point[order][1:] != hit_point[order][:-1]]]
        out[hit_point[first]] = self.codes[hit_grid[first]]
        return out
