"""Build hook: the wheel ships the JS client and the demo page as package data.

``client_js/`` stays the one source (DESIGN.md's layout). Building a wheel copies the
modules the npm package publishes (its ``files``), the demo page, and the demo's two
npm dependencies (``vendor/``, written by ``npm ci``) into ``toolplex/static``, which
``toolplex serve`` serves from an installed wheel. An editable install copies nothing:
the server finds ``client_js/`` beside the package instead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CLIENT = Path(__file__).resolve().parent / "client_js"


class BuildWithClient(build_py):
    """``build_py`` that also copies the client into the package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "toolplex" / "static"
        package = json.loads((CLIENT / "package.json").read_text())
        missing = [name for name in package["toolplex"]["vendor"]
                   if not (CLIENT / "vendor" / name).is_file()]
        if missing:
            raise SystemExit(f"client_js/vendor/ lacks {', '.join(missing)}: run "
                             "`(cd client_js && npm ci)` before building the wheel")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name in package["files"]:
            shutil.copy2(CLIENT / name, target / name)
        shutil.copytree(CLIENT / "demo", target / "demo")
        (target / "vendor").mkdir()
        for name in package["toolplex"]["vendor"]:
            shutil.copy2(CLIENT / "vendor" / name, target / "vendor" / name)


setup(cmdclass={"build_py": BuildWithClient})
