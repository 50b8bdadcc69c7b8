"""The run's report: `summary.csv`, `comparison.csv`, figures and a self-contained `report.html`.

`build` decides what is read and written, `tables` turns the numbers into tables for people,
`figures` draws, `page` fills the HTML template (`templates/report.html.j2`).
"""

from varprune.report.build import FIGURES, build_report

__all__ = ["FIGURES", "build_report"]
