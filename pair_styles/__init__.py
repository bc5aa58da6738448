"""C++ sources of pair style mlff, shipped as package data (``lmpbench.pair_styles``) so that
``lmpbench plugin build`` works from an installed distribution too."""
