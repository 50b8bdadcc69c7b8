"""The `report` config slice: what the report shows and how large it draws it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportSettings:
    """The `report` config slice."""

    cases: int = 3
    paper_macs_reduction: float = 0.6026
    paper_params_reduction: float = 0.6607
    dpi: int = 110

    @classmethod
    def from_config(cls, cfg: dict) -> ReportSettings:
        return cls(**{k: v for k, v in (cfg or {}).items() if k in cls.__dataclass_fields__})
