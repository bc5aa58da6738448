/* -*- c++ -*- ----------------------------------------------------------
   lmpbench: pair style mlff, a LAMMPS plugin running torch force fields.
   The model contract is documented in pair_styles/README.md.
------------------------------------------------------------------------- */

#ifdef PAIR_CLASS
// clang-format off
PairStyle(mlff,PairMLFF);
// clang-format on
#else

#ifndef LMP_PAIR_MLFF_H
#define LMP_PAIR_MLFF_H

#include "pair.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace at {
class Tensor;
}

namespace LAMMPS_NS {

// Everything that touches torch lives in pair_mlff.cpp, so LAMMPS translation units never
// see torch headers.
struct MLFFModel;

class PairMLFF : public Pair {
 public:
  static constexpr int CONTRACT_VERSION = 1;

  PairMLFF(class LAMMPS *);
  ~PairMLFF() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  double memory_usage() override;
  void setup() override;
  void finish() override;

  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

  // exchange layout: ghost rows of a model's node features from their owners (forward), or
  // ghost rows of their gradients added to their owners' (reverse); called by the model
  void exchange_features(double *rows, int64_t nrows, int64_t width, bool reverse);

 protected:
  std::unique_ptr<MLFFModel> model;
  std::string device_name;    // "cpu" or "cuda"
  int nthreads;               // torch intra-op threads per MPI rank
  double r_max;               // model cutoff (LAMMPS distance units)
  int num_layers;             // message-passing depth; 1 = strictly local model
  std::vector<long> type_map;    // LAMMPS type (1..ntypes) -> model type index
  std::vector<std::string> model_type_names;

  void allocate();
  void load_torchscript(const std::string &filename);
  void load_aoti(const std::string &filename);
  void apply_metadata(const std::map<std::string, std::string> &meta);
  void map_types(int nelements, char **elements);

  // the comm staging rows of the current exchange pass, their columns, and the model's nodes
  double *exchange_rows;
  int exchange_columns;
  int exchange_nnodes;
  // per run: model calls, values packed, ghost nodes given to the model, time in
  // exchange_features (reported by finish)
  bigint exchange_model_calls, exchange_values, exchange_ghost_nodes;
  double exchange_seconds;

  void compute_ghost();
  void compute_local();
  void fill_types(int n);
  void reserve_edges(int ncenters);
  int64_t build_ghost_edges(int depth);
  int select_exchange_nodes(int64_t nedges);
  int64_t build_local_edges();
  void accumulate(const at::Tensor &energy_local, const at::Tensor &atom_energy,
                  const at::Tensor &forces, int nforce, const int *atom_of_node = nullptr);
  void check_finite(double energy, const double *forces, int n);
};

}    // namespace LAMMPS_NS

#endif
#endif
