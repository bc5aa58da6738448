"""Labelled datasets: frames with energies and forces in eV and Å, their splits, and the
reference trajectory a run is compared with.

``store`` is the one on-disk format (a folder with ``dataset.json``); ``lmpbench data``
(downloads of the paper's datasets) and ``lmpbench reference`` (data made here with real
reference potentials) both write it, ``lmpbench train`` and ``lmpbench analyze`` read it.
"""
