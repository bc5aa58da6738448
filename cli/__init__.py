"""Click commands of lmpbench (installed as ``lmpbench.cli``); thin shells over the library."""
