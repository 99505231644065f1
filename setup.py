"""Build hook: the wheel carries the dashboard's scripts.

The socket.io client (from npm) and notifier's client module are copied into the package's
`static/vendor/` while the wheel is built, so an installed service needs no Node and no
checkout. Node is needed only here, to have run `npm ci` first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
VENDORED = {
    "socket.io.esm.min.js": ROOT / "node_modules" / "socket.io-client" / "dist" / "socket.io.esm.min.js",
    "notifier-client.mjs": ROOT / "client_examples" / "notifier-client.mjs",
}


class BuildWithDashboardAssets(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install serves them from the checkout
        target = Path(self.build_lib) / "notifier" / "static" / "vendor"
        target.mkdir(parents=True, exist_ok=True)
        for name, source in VENDORED.items():
            if not source.exists():
                raise SystemExit(f"{source} is missing: run `npm ci` before building the wheel")
            shutil.copyfile(source, target / name)


setup(cmdclass={"build_py": BuildWithDashboardAssets})
