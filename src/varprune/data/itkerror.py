"""The reason inside an ITK/SimpleITK exception, without the source location.

SimpleITK raises `RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute:
/build/.../itkImportImageContainer.hxx:179:\\nFailed to allocate memory for image.")`: the first
line names where in ITK's sources it was thrown, the reason follows on the next line(s), often
prefixed (`sitk::ERROR:`, `ITK ERROR: NiftiImageIO(0x55d0...):`). A message that keeps only the
first line tells the user nothing, so every entry point shows this instead.
"""

from __future__ import annotations

import re

_LOCATION = re.compile(r"^Exception thrown in .*?:\s*\S+:\d+:\s*$")
_PREFIX = re.compile(r"^(?:sitk::ERROR:|ITK ERROR:|itk::ERROR:|ERROR:)\s*")
_OBJECT = re.compile(r"^[A-Za-z_][\w:]*\(0x[0-9a-fA-F]+\):\s*")


def itk_reason(err: BaseException) -> str:
    """The reason lines of an ITK exception joined into one line (the location dropped)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    reasons = []
    for line in lines:
        if _LOCATION.match(line):
            continue
        line = _OBJECT.sub("", _PREFIX.sub("", line))
        if line:
            reasons.append(line)
    if reasons:
        return " ".join(reasons)
    return lines[0] if lines else type(err).__name__
