"""The Extensions Index's own rules for a description file and its extension (as its
scripts/check_description_files.py applies them), checked offline: catalog entry fields, extension and
repository names, category, scm URL, icon and screenshot URLs in the top-level CMakeLists.txt (raw GitHub
URLs of files that exist in this repository and are real images), license file, repository size, and one
repository behind every link the modules show."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "MVCFClassifier.json"
#: The categories the Index accepts (its ACCEPTED_EXTENSION_CATEGORIES, which this extension's must be in).
ACCEPTED_CATEGORIES = {
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda",
    "Converters", "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation",
    "Filtering", "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT",
    "Informatics", "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning",
    "Otolaryngology", "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy",
    "Registration", "Remote", "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis",
    "Shape Regression", "Shape Visualization", "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging",
    "Supervisely", "Surface Models", "SurfaceLearner", "Tomographic Reconstruction", "Tracking", "Tractography",
    "Training", "Ultrasound", "Utilities", "Vascular Modeling Toolkit", "Virtual Reality"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")


def catalog() -> dict:
    return json.loads(CATALOG.read_text(encoding="utf-8"))


def cmake_text() -> str:
    return (REPO / "CMakeLists.txt").read_text(encoding="utf-8")


def cmake_value(name: str) -> str:
    """A quoted set(NAME "value") of the top-level CMakeLists.txt, matched the way the Index reads it (no
    space before the closing parenthesis for EXTENSION_SCREENSHOTURLS)."""
    match = re.search(rf'set\s*\({name}\s*"([^"]+)"\)', cmake_text(), re.IGNORECASE | re.MULTILINE)
    assert match, f"set({name} \"...\") not found in CMakeLists.txt the way the Index parses it"
    return match.group(1).strip()


def repository_url() -> str:
    """https://github.com/OWNER/NAME of the catalog entry's scm_url."""
    return catalog()["scm_url"].strip().strip("/").removesuffix(".git")


def raw_url_to_path(url: str) -> Path:
    """A raw.githubusercontent.com URL of this repository (at the catalog's scm_revision) -> the file here."""
    owner_name = urlsplit(repository_url()).path.strip("/")
    prefix = f"https://raw.githubusercontent.com/{owner_name}/{catalog().get('scm_revision', 'main')}/"
    assert url.startswith(prefix), f"{url} is not a raw URL of {owner_name} at {catalog().get('scm_revision')}"
    return REPO / url[len(prefix):]


def test_catalog_file_is_lf_only_json_with_a_known_category_and_a_git_or_https_scm_url():
    raw = CATALOG.read_bytes()
    assert b"\r" not in raw, "the Index refuses CR or CRLF line endings"
    entry = json.loads(raw)
    assert entry["category"] in ACCEPTED_CATEGORIES
    assert "://" in entry["scm_url"] and urlsplit(entry["scm_url"]).scheme in ("git", "https")
    assert entry["category"] == cmake_value("EXTENSION_CATEGORY")


def test_extension_and_repository_names_follow_the_index():
    extension_name = CATALOG.stem
    assert not extension_name.lower().startswith("slicer"), "the extension name must not start with Slicer"
    project = re.search(r"project\s*\(\s*([^\s\)]+)", cmake_text(), re.IGNORECASE)
    assert project and project.group(1).strip("\"'") == extension_name
    repository = Path(urlsplit(repository_url()).path).name
    assert repository.startswith(("Slicer", "SlicerExtension-", "SlicerExtension_")), repository


@pytest.mark.parametrize("variable", ["EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"])
def test_icon_and_screenshot_urls_are_raw_urls_of_real_images_in_this_repository(variable):
    from PIL import Image

    urls = cmake_value(variable).split()
    assert urls, f"{variable} is empty: the Index refuses that"
    for url in urls:
        assert url.startswith("https://") and url.lower().endswith(IMAGE_SUFFIXES), url
        path = raw_url_to_path(url)
        assert path.is_file(), f"{url} points to {path.relative_to(REPO)}, which is not in the repository"
        with Image.open(path) as image:
            assert image.format in ("PNG", "JPEG", "GIF")
            if variable == "EXTENSION_SCREENSHOTURLS":
                assert image.size[0] >= 800 and image.size[1] >= 400, "a screenshot, not a thumbnail"
                colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
                assert colours is None or len(colours) > 1000, "a rendered result, not a placeholder"


def test_homepage_help_links_and_catalog_name_one_repository():
    repository = repository_url()
    assert cmake_value("EXTENSION_HOMEPAGE").startswith(repository)
    for module in ("MVCFClassifier", "MVCFTraining"):
        text = (REPO / module / f"{module}.py").read_text(encoding="utf-8")
        links = re.findall(r"https://github\.com/[^\s'\"<>#]+", text)
        assert links, f"{module}'s help text links to no documentation"
        for link in links:
            assert link.startswith(repository + "/"), f"{module} links to {link}, not to {repository}"
            relative = link[len(repository) + 1:]
            if relative.startswith("blob/"):
                assert (REPO / relative.split("/", 2)[2]).is_file(), f"{link}: no such file here"


def test_license_file_and_repository_size():
    import subprocess

    assert (REPO / "LICENSE").is_file()
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    paths = [REPO / p for p in listed.decode().split("\0") if p]
    size_mb = sum(p.stat().st_size for p in paths if p.is_file()) / 2**20
    assert size_mb < 100, f"the Index refuses repositories over 100 MB ({size_mb:.1f} MB)"
