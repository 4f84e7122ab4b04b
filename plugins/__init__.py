"""fgvcbench's built-in plugins.

Each sub-package is a plugin written exactly as a third party would write one: it imports
only ``fgvcbench.api`` and is announced through the ``fgvcbench`` entry-point group in
``pyproject.toml``. On disk this folder is ``plugins/``; it installs as the package
``fgvcbench_plugins``. The core never imports it.
"""
