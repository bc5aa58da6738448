/* ----------------------------------------------------------------------
   lmpbench: per-layer ghost exchange, the torch operators' side.

   libmlffexchange.so registers two torch operators that a message-passing model calls
   between its layers (pair_styles/README.md, "exchange layout"):

     mlff::ghost_exchange(Tensor features) -> Tensor
         rows [0, nlocal) as given; every ghost row replaced by its owner's row
     mlff::ghost_reverse(Tensor grad) -> Tensor
         the adjoint: each ghost row added to its owner's row, ghost rows zeroed

   each the other's derivative, so autograd (TorchScript) and traced backward graphs
   (AOTInductor) carry them. The rows travel through whoever is installed as the process's
   GhostExchanger (pair style mlff during its compute, LAMMPS's forward/reverse comm); with
   none installed, as in Python outside LAMMPS, every node is local and both are identities.

   The library is separate from the LAMMPS plugin so that Python (torch.ops.load_library,
   to script or export a model) and the plugin load the same registration, once per process.
------------------------------------------------------------------------- */

#ifndef LMP_MLFF_EXCHANGE_H
#define LMP_MLFF_EXCHANGE_H

#include <cstdint>

namespace mlff {

class GhostExchanger {
 public:
  virtual ~GhostExchanger() = default;
  // rows: nrows x width float64 values, row-major; nrows is the caller's node count
  virtual void forward(double *rows, int64_t nrows, int64_t width) = 0;
  virtual void reverse(double *rows, int64_t nrows, int64_t width) = 0;
};

// the exchanger model calls go through until the next call (nullptr: none)
void set_ghost_exchanger(GhostExchanger *exchanger);

}    // namespace mlff

#endif
