"""What a build makes: :class:`Products`, the lazy reference-file arrays and statistics that
:mod:`nrsdark_dask.export.fits` writes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..store import StoreLayout
from .budget import BlockPlan


@dataclass
class Products:
    """Lazy reference-file arrays (``xarray.DataArray`` backed by dask) and statistics."""

    layout: StoreLayout
    plan: BlockPlan
    exposures: list = field(default_factory=list)
    dates: list = field(default_factory=list)
    arrays: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    store: str = ""  # where the inputs came from (the dataset's ``nrsdark_store``)
    gratings: tuple = ()  # the inputs' GRATING values

    def __getitem__(self, name):
        return self.arrays[name]
