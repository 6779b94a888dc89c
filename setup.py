"""Package list for setuptools (everything else is in pyproject.toml).

The shipped themes live in the top-level ``themes/`` folder, where a desk copies one as the start of
its own; the wheel carries them as the data package ``ess_tui.themes``.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["ess_tui", "ess_tui.*"]), "ess_tui.themes"],
    package_dir={"ess_tui.themes": "themes"},
)
