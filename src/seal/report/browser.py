"""Rendering a report page in headless Chromium: a PNG screenshot at a given width, or the DOM
as the browser built it. Used by the tests (the page renders, its sections are there, model
text stays text) and to make the screenshots committed under results/report_pages/:

    python -m seal.report.browser report/report.html shot.png [--height 2400] [--trim]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def find_chromium() -> str | None:
    return next((p for name in CANDIDATES if (p := shutil.which(name))), None)


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium on PATH")
    with tempfile.TemporaryDirectory(prefix="seal-chromium-") as profile:  # a fresh profile each time
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              timeout=timeout, check=False, text=True)


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 2400, timeout: float = 90) -> Path:
    """A `width` x `height` PNG of the top of `page`."""
    png = Path(png).resolve()
    r = _run([f"--screenshot={png}", f"--window-size={width},{height}", Path(page).resolve().as_uri()], timeout)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {r.returncode}): {r.stderr.strip()[-400:]}")
    return png


def trim_bottom(png: Path, margin: int = 24) -> Path:
    """Cut the blank rows below a page's content (a screenshot taller than the page) and store the
    PNG with a 256-colour palette (text and plots: several times smaller, no visible change)."""
    import numpy as np
    from PIL import Image

    img = Image.open(png).convert("RGB")
    rgb = np.asarray(img)
    content = (rgb < 250).any(axis=(1, 2)).nonzero()[0]
    if content.size and content[-1] + margin < rgb.shape[0]:
        img = img.crop((0, 0, rgb.shape[1], int(content[-1]) + margin))
    img.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(png, optimize=True)
    return png


def dom(page: Path, timeout: float = 90) -> str:
    """The page's DOM after Chromium parsed and laid it out (`--dump-dom`)."""
    return _run(["--dump-dom", Path(page).resolve().as_uri()], timeout).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("page", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=2400)
    ap.add_argument("--trim", action="store_true", help="cut blank rows below the page's content")
    a = ap.parse_args()
    png = screenshot(a.page, a.png, a.width, a.height)
    print(trim_bottom(png) if a.trim else png)


if __name__ == "__main__":
    main()
