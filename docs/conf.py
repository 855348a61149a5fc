"""Sphinx configuration of skvae's documentation.

Build (from the repository root):

    pip install -e ".[docs]" && python -m sphinx -W --keep-going -b html docs docs/_build/html

The gallery runs every script of examples/ in its fast mode (SKVAE_EXAMPLES_FAST=1) unless
SKVAE_EXAMPLES_FAST=0 is set in the environment: then the figures are the full runs'.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SKVAE_EXAMPLES_FAST", "1")

import skvae  # noqa: E402

project = "skvae"
author = "the skvae developers"
copyright = "2026, the skvae developers"
release = skvae.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py"]
html_theme = "alabaster"
html_static_path = []
html_theme_options = {"description": "Latent variable models as scikit-learn estimators",
                      "fixed_sidebar": True}

autosummary_generate = True
# Members inherited from torch.nn.Module and Exception are theirs to document (see the
# class template in _templates/autosummary).
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# Every public docstring is checked; these checks are left out on purpose: a See Also or an
# Examples section in every method would repeat the user guide (SA01, EX01), an extended
# summary is not always needed (ES01), and returns are named as in scikit-learn
# ("X_new : ndarray of shape ..."), which RT02 forbids.
numpydoc_validation_checks = {"all", "SA01", "EX01", "ES01", "GL08", "RT02"}
# Methods inherited from scikit-learn are scikit-learn's to document.
numpydoc_validation_exclude = {
    r"\.__init__$", r"\.get_metadata_routing$", r"\.set_\w+_request$", r"\.set_output$",
    r"\.get_params$", r"\.set_params$", r"\.fit_transform$", r"\.fit_predict$",
}


sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"\.py$",  # every example runs, so none can rot
    "ignore_pattern": r"__init__\.py|_common\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
}
