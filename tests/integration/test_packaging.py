"""The sdist carries the docs the README links to, and says who made it (issue 13 item 14)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from setuptools import build_meta

ROOT = Path(__file__).resolve().parents[2]


def test_the_sdist_ships_docs_and_its_metadata_names_authors_and_doc_urls(
    tmp_path: Path,
) -> None:
    """Relative README links resolve inside the sdist; authors and URLs are in PKG-INFO."""
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        name = build_meta.build_sdist(str(tmp_path))
    finally:
        os.chdir(cwd)
    with tarfile.open(tmp_path / name) as sdist:
        names = sdist.getnames()
        top = names[0].split("/")[0]
        info = sdist.extractfile(f"{top}/PKG-INFO")
        assert info is not None
        pkg_info = info.read().decode()
    for doc in sorted(p.name for p in (ROOT / "docs").glob("*.md")):
        assert f"{top}/docs/{doc}" in names
    assert "Author: the webphone developers" in pkg_info
    assert "Project-URL: Documentation, docs/api.md" in pkg_info
    readme_links = [line for line in (ROOT / "README.md").read_text().splitlines()
                    if "](docs/" in line]
    assert readme_links and all(f"{top}/{link.split('](')[1].split(')')[0].split('#')[0]}"
                                in names for link in readme_links)
