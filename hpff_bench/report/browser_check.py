"""Open a report's index.html in headless Chromium at 1,400 px and check that every figure is whole.

    python -m hpff_bench.report.browser_check reports/cifar10 [--width 1400]

Why a browser: the figure test (tests/test_report_figures.py) proves that nothing is clipped
inside each PNG; only a browser shows what the page does with them. Two passes of Chromium:
1. `--dump-dom` of a copy of index.html with a small script that, once the page has loaded,
   measures every figure (`getBoundingClientRect`) and writes the result into the DOM: each
   image must have loaded, lie wholly inside the page's width (no horizontal clipping or
   scrolling), and be shown at no less than half its pixel width (the 200-dpi PNGs are meant
   to be seen at 100 dpi); the page must not scroll sideways.
2. `--screenshot`s of the whole page, written next to the report as
   `browser-check-<width>-<part>.png` (one per 16,000 px of page height: Chromium's limit), for
   a person to look at.
Exit 0 when every figure passes, 1 when one does not (each named), 2 when Chromium or the
report is missing. Not part of `make test`: `make report-check` runs it where Chromium exists.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MAX_HEIGHT = 16_000  # Chromium's screenshot limit is about 16k px
_SCRIPT = """<script>
window.addEventListener('load', function () {
  var out = {width: window.innerWidth, page_width: document.documentElement.scrollWidth,
             height: document.documentElement.scrollHeight, figures: []};
  document.querySelectorAll('figure img').forEach(function (img) {
    var r = img.getBoundingClientRect();
    out.figures.push({id: img.closest('figure').id, natural: img.naturalWidth, shown: r.width,
                      left: r.left, right: r.right, height: r.height, complete: img.complete});
  });
  var pre = document.createElement('pre'); pre.id = 'hpff-check';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(browser: str, url: str, width: int, height: int, *extra: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--window-size={width},{height}", "--virtual-time-budget=10000",
            *extra, url,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def measure(browser: str, index: Path, width: int) -> dict:
    """Layout of every figure in `index` at `width` px (pass 1)."""
    html = index.read_text(encoding="utf-8")
    with tempfile.NamedTemporaryFile("w", suffix=".html", dir=index.parent, delete=False, encoding="utf-8") as f:
        f.write(html.replace("</body>", _SCRIPT + "</body>"))
        probe = Path(f.name)
    try:
        run = _chromium(browser, probe.resolve().as_uri(), width, 1000, "--dump-dom")
    finally:
        probe.unlink(missing_ok=True)
    m = re.search(r'<pre id="hpff-check">(.*?)</pre>', run.stdout, re.S)
    if not m:
        raise RuntimeError(f"Chromium gave no measurement (rc {run.returncode}): {run.stderr.strip()[-500:]}")
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshots(browser: str, index: Path, width: int, height: int) -> list[Path]:
    """The whole page in parts of at most MAX_HEIGHT px (the page shifted up for each part)."""
    html = index.read_text(encoding="utf-8")
    for old in index.parent.glob(f"browser-check-{width}-*.png"):
        old.unlink()
    shots = []
    for part in range(max(1, -(-height // MAX_HEIGHT))):
        shot = index.parent / f"browser-check-{width}-{part + 1}.png"
        shift = f"<style>body{{transform:translateY(-{part * MAX_HEIGHT}px)}}</style>"
        with tempfile.NamedTemporaryFile("w", suffix=".html", dir=index.parent, delete=False, encoding="utf-8") as f:
            f.write(html.replace("</head>", shift + "</head>"))
            page = Path(f.name)
        try:
            h = min(MAX_HEIGHT, height - part * MAX_HEIGHT)
            _chromium(browser, page.resolve().as_uri(), width, h, f"--screenshot={shot.resolve()}")
        finally:
            page.unlink(missing_ok=True)
        shots.append(shot)
    return shots


def problems(layout: dict) -> list[str]:
    out = []
    if layout["page_width"] > layout["width"]:
        out.append(f"the page is {layout['page_width']} px wide at a {layout['width']} px window (scrolls sideways)")
    if not layout["figures"]:
        out.append("no figures on the page")
    for f in layout["figures"]:
        name = f["id"] or "a figure"
        if not f["complete"] or not f["natural"]:
            out.append(f"{name}: image did not load")
            continue
        if f["left"] < -0.5 or f["right"] > layout["width"] + 0.5:
            out.append(f"{name}: spans x {f['left']:.0f}..{f['right']:.0f}, outside the {layout['width']} px window")
        if f["shown"] < f["natural"] / 2 - 1:
            out.append(f"{name}: shown {f['shown']:.0f} px wide, under half its {f['natural']} px")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hpff_bench.report.browser_check", description=__doc__.split("\n")[0])
    ap.add_argument("report", type=Path, help="a report directory (with index.html)")
    ap.add_argument("--width", type=int, default=1400, help="window width in px (default 1400)")
    args = ap.parse_args(argv)
    index = args.report / "index.html"
    if not index.is_file():
        print(f"{index}: no such file (make the report first: hpff-bench report ...)", file=sys.stderr)
        return 2
    if not 320 <= args.width <= 7680:
        print(f"--width must be 320-7680 px, got {args.width}", file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None:
        print("no Chromium found (" + ", ".join(BROWSERS) + "); on Debian: apt-get install -y chromium", file=sys.stderr)
        return 2
    layout = measure(browser, index, args.width)
    shots = screenshots(browser, index, args.width, int(layout["height"]))
    bad = problems(layout)
    for f in layout["figures"]:
        print(f"{f['id']}: {f['shown']:.0f} x {f['height']:.0f} px shown of {f['natural']} px, x {f['left']:.0f}..{f['right']:.0f}")
    print(f"page {layout['page_width']} x {layout['height']} px at a {layout['width']} px window; screenshots: "
          + ", ".join(str(p) for p in shots))
    for b in bad:
        print(f"FAIL {b}", file=sys.stderr)
    print("every figure whole" if not bad else f"{len(bad)} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
