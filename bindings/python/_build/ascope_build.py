"""The package's own build backend (PEP 517, and PEP 660 for ``pip install -e``).

The package is pure Python: a wheel is a zip of ``ascope/`` and three
metadata files. Building it needs nothing from PyPI, so ``pip install
./bindings/python`` works offline in any environment, a fresh venv
included: pip installs no build requirements (there are none) before it
calls this module. setuptools would have to be downloaded there.

Metadata comes from ``pyproject.toml``'s ``[project]`` table.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "ascope"


# ---- metadata ---------------------------------------------------------------------

def _project() -> Dict[str, object]:
    """pyproject.toml's [project] table: with tomllib where there is one
    (3.11 on), else read for the few plain keys this file uses."""
    path = os.path.join(ROOT, "pyproject.toml")
    try:
        import tomllib
        with open(path, "rb") as f:
            return tomllib.load(f)["project"]
    except ImportError:
        pass
    with open(path, encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"^\[project\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S).group(1)
    out: Dict[str, object] = {}
    for key, value in re.findall(r"^([\w-]+)\s*=\s*(.+)$", section, re.M):
        out[key] = re.findall(r'"([^"]*)"', value) if value.startswith("[") else value.strip('"')
    return out


def _metadata() -> str:
    p = _project()
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {p['name']}",
        f"Version: {p['version']}",
        f"Summary: {p.get('description', '')}",
    ]
    if "requires-python" in p:
        lines.append(f"Requires-Python: {p['requires-python']}")
    lines += [f"Classifier: {c}" for c in p.get("classifiers", [])]  # type: ignore[union-attr]
    readme = os.path.join(ROOT, str(p.get("readme", "README.md")))
    body = ""
    if os.path.exists(readme):
        lines.append("Description-Content-Type: text/markdown")
        with open(readme, encoding="utf-8") as f:
            body = f.read()
    return "\n".join(lines) + "\n\n" + body


def _names() -> Tuple[str, str]:
    p = _project()
    return str(p["name"]), str(p["version"])


def _dist_info() -> str:
    name, version = _names()
    return f"{name}-{version}.dist-info"


def _wheel_name() -> str:
    name, version = _names()
    return f"{name}-{version}-py3-none-any.whl"


# ---- wheels -----------------------------------------------------------------------

def _package_files() -> List[Tuple[str, str]]:
    """(path in the wheel, path on disk) of the package's files."""
    out = []
    top = os.path.join(ROOT, PACKAGE)
    for d, dirs, files in os.walk(top):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py") or f == "py.typed":
                disk = os.path.join(d, f)
                out.append((os.path.relpath(disk, ROOT).replace(os.sep, "/"), disk))
    return out


def _write_wheel(directory: str, files: List[Tuple[str, bytes]]) -> str:
    """A wheel of files (path, content), with WHEEL, METADATA and RECORD."""
    info = _dist_info()
    files = files + [
        (f"{info}/METADATA", _metadata().encode()),
        (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: ascope_build\n"
                          b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
    ]
    record = io.StringIO()
    for path, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.write(f"{path},sha256={digest},{len(data)}\n")
    record.write(f"{info}/RECORD,,\n")
    files.append((f"{info}/RECORD", record.getvalue().encode()))
    name = _wheel_name()
    with zipfile.ZipFile(os.path.join(directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files:
            z.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return name


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def get_requires_for_build_wheel(config_settings: Optional[dict] = None) -> List[str]:
    return []


def get_requires_for_build_editable(config_settings: Optional[dict] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[dict] = None) -> List[str]:
    return []


def prepare_metadata_for_build_wheel(metadata_directory: str,
                                     config_settings: Optional[dict] = None) -> str:
    info = os.path.join(metadata_directory, _dist_info())
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as f:
        f.write(_metadata())
    return _dist_info()


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory: str, config_settings: Optional[dict] = None,
                metadata_directory: Optional[str] = None) -> str:
    return _write_wheel(wheel_directory, [(p, _read(d)) for p, d in _package_files()])


def build_editable(wheel_directory: str, config_settings: Optional[dict] = None,
                   metadata_directory: Optional[str] = None) -> str:
    """A wheel holding one .pth file: the checkout's folder on sys.path."""
    name, version = _names()
    return _write_wheel(wheel_directory, [(f"__editable__.{name}-{version}.pth",
                                           (ROOT + "\n").encode())])


def build_sdist(sdist_directory: str, config_settings: Optional[dict] = None) -> str:
    name, version = _names()
    base = f"{name}-{version}"
    files = [p for p, _ in _package_files()] + ["pyproject.toml", "README.md",
                                                "_build/ascope_build.py"]
    pkg_info = _metadata().encode()
    out = f"{base}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, out), "w:gz", format=tarfile.PAX_FORMAT) as t:
        for path in files:
            t.add(os.path.join(ROOT, path), arcname=f"{base}/{path}")
        ti = tarfile.TarInfo(f"{base}/PKG-INFO")
        ti.size = len(pkg_info)
        t.addfile(ti, io.BytesIO(pkg_info))
    return out
