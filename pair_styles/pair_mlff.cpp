/* ----------------------------------------------------------------------
   lmpbench: pair style mlff.

   Runs a torch force field that gives per-atom energies, in one of two graph layouts
   (pair_styles/README.md is the contract):

   ghost  every local and ghost atom is a node and every listed pair within r_max an edge;
          the energy is the sum over local atoms only and forces act on all nodes, so with
          newton pair on LAMMPS sums ghost forces back to their owners. With the ghost
          cutoff raised to num_layers * r_max + skin this is exact for message-passing
          models on any number of MPI ranks. Virial by fdotr over local and ghost atoms.
          TorchScript files (forces by autograd here) or AOTInductor files (forces inside).
   exchange  the ghost layout with a ghost shell of one r_max and edges into local atoms only;
          the model's nodes are the local atoms and the ghosts within r_max of one. It calls
          mlff::ghost_exchange between message-passing layers, which fills ghost rows of its
          node features from their owners (LAMMPS forward comm), and in the backward pass
          mlff::ghost_reverse sums gradients of ghost rows into their owners (reverse comm).
          Exact on any number of ranks at the cost of one r_max of ghosts.
   local  nodes are the local atoms only, ghost neighbours are mapped to their owners with
          integer cell shifts (nequip's pair_nequip layout); the model returns forces and
          the virial. One MPI rank only; the cheapest graph.
------------------------------------------------------------------------- */

#include "pair_mlff.h"
#include "mlff_exchange.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "platform.h"
#include "update.h"
#include "utils.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/headeronly/version.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <dlfcn.h>
#include <malloc.h>
#include <cstring>
#include <map>
#include <mpi.h>
#include <stdexcept>

using namespace LAMMPS_NS;

static constexpr char METADATA_FILE[] = "mlff_metadata.json";
// inputs/outputs of the AOTInductor layouts, as nequip's export records them
static constexpr char LOCAL_INPUTS[] = "pos edge_index atom_types cell edge_cell_shift";
static constexpr char LOCAL_OUTPUTS[] = "atomic_energy forces virial";
static constexpr char GHOST_INPUTS[] = "pos edge_index atom_types mlff_local_mask";
static constexpr char GHOST_OUTPUTS[] = "atomic_energy forces";
static constexpr char EXCHANGE_INPUTS[] = "pos edge_index atom_types mlff_local_weight";
// values per atom in one comm pass of the exchange layout; wider feature rows take several
static constexpr int EXCHANGE_COLUMNS = 128;

namespace LAMMPS_NS {
struct MLFFModel {
  enum Format { TORCHSCRIPT, AOTI } format = TORCHSCRIPT;
  enum Graph { GHOST, EXCHANGE, LOCAL } graph = GHOST;
  torch::jit::Module module;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> aoti;
  torch::Device device{torch::kCPU};
  torch::Dtype dtype{torch::kFloat64};
  std::string filename;

  // per-step buffers, reused; they grow past their high-water mark only
  torch::Tensor edge_buffer;                // int64: centers of E edges, then their neighbors
  std::vector<int64_t> neighbor_scratch;    // neighbors while E is still unknown
  std::vector<int64_t> types;
  std::vector<int> hops;                    // ghost layout: hops from the nearest local atom
  // exchange layout: the model's nodes are the local atoms, then the ghosts that send an
  // edge; node -> LAMMPS atom index, and LAMMPS atom -> node (-1: not a node)
  std::vector<int> atom_of_node;
  std::vector<int> node_of_atom;
  std::vector<double> node_pos;
  // exchange layout: one comm pass's columns for every local and ghost atom (LAMMPS relays
  // ghosts of ghosts, so comm needs rows for atoms that are no model node)
  std::vector<double> exchange_staging;
  std::vector<double> cell_shifts;          // local layout: integer cell shift of each edge
  // aoti ghost layout: 1 per node, 0 for ghosts; aoti exchange layout: a 1 per local atom
  torch::Tensor local_mask;
  int mask_nlocal = -1;
};
}    // namespace LAMMPS_NS

namespace {
// routes the model's exchange operators to one pair style (when given one) for the duration
// of a model call
class PairExchanger : public mlff::GhostExchanger {
 public:
  explicit PairExchanger(PairMLFF *pair) : pair(pair)
  {
    if (pair) mlff::set_ghost_exchanger(this);
  }
  ~PairExchanger() override
  {
    if (pair) mlff::set_ghost_exchanger(nullptr);
  }
  void forward(double *rows, int64_t nrows, int64_t width) override
  {
    pair->exchange_features(rows, nrows, width, false);
  }
  void reverse(double *rows, int64_t nrows, int64_t width) override
  {
    pair->exchange_features(rows, nrows, width, true);
  }

 private:
  PairMLFF *pair;
};
}    // namespace

// first line of a torch error: the rest is a C++ backtrace a user cannot act on
static std::string first_line(const char *what)
{
  std::string msg(what);
  auto eol = msg.find('\n');
  return eol == std::string::npos ? msg : msg.substr(0, eol);
}

// CPU features an AOTInductor file was compiled for (its AOTI_CPU_ISA metadata) that this
// CPU lacks; running such code would die with an illegal instruction. The Python side's
// table (ISA_FLAGS in lmpbench/cpu.py, /proc/cpuinfo spellings) mirrors this one: same names,
// same order; change both together
static std::string missing_cpu_features(const std::string &isa)
{
  static const std::map<std::string, bool> supported = {
      {"AVX2", __builtin_cpu_supports("avx2")},
      {"AVX512", __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")},
      {"AVX512_VNNI", __builtin_cpu_supports("avx512vnni")},
      {"AVX512_BF16", __builtin_cpu_supports("avx512bf16")},
      {"AVX512_FP16", __builtin_cpu_supports("avx512fp16")},
  };
  std::string missing;
  for (const auto &feature : utils::split_words(isa)) {
    auto it = supported.find(feature);
    if (it != supported.end() && !it->second) missing += " " + feature;
  }
  return missing;
}

// Library that the process's global symbol lookup gives for a BLAS routine. Compiled models
// and TorchScript call dgemm_ through it; when liblammps (which carries a reference BLAS)
// was loaded before libtorch, those calls land in the reference BLAS and run several times
// slower. Returns the providing library when it is not torch's own, else an empty string.
static std::string foreign_blas()
{
  void *global = dlsym(RTLD_DEFAULT, "dgemm_");
  void *torch_lib = dlopen("libtorch_cpu.so", RTLD_NOW | RTLD_NOLOAD);
  void *torch_own = torch_lib ? dlsym(torch_lib, "dgemm_") : nullptr;
  if (torch_lib) dlclose(torch_lib);
  if (!global || !torch_own || global == torch_own) return "";
  Dl_info info;
  return dladdr(global, &info) && info.dli_fname ? info.dli_fname : "another library";
}

/* ---------------------------------------------------------------------- */

PairMLFF::PairMLFF(LAMMPS *lmp) :
    Pair(lmp), model(new MLFFModel), device_name("cpu"), nthreads(1), r_max(0.0), num_layers(1),
    exchange_rows(nullptr), exchange_columns(0), exchange_nnodes(0),
    exchange_model_calls(0), exchange_values(0), exchange_ghost_nodes(0), exchange_seconds(0.0)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  centroidstressflag = CENTROID_NOTAVAIL;
}

PairMLFF::~PairMLFF()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

/* ---------------------------------------------------------------------- */

void PairMLFF::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom || cvflag_atom)
    error->all(FLERR,
               "Pair style mlff does not compute per-atom virials (compute stress/atom or "
               "centroid/stress/atom); use the global pressure instead");

  if (model->graph == MLFFModel::LOCAL)
    compute_local();
  else
    compute_ghost();
}

/* ----------------------------------------------------------------------
   ghost and exchange layouts: nodes = local + ghost atoms, forces on all of them, virial by
   fdotr. The exchange layout's model calls back into exchange_features during the call
------------------------------------------------------------------------- */

void PairMLFF::compute_ghost()
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const bool exchange = model->graph == MLFFModel::EXCHANGE;
  const int64_t nedges = build_ghost_edges(exchange ? 1 : num_layers);
  const int nnodes = exchange ? select_exchange_nodes(nedges) : nall;
  PairExchanger exchanger(exchange ? this : nullptr);
  if (exchange) exchange_model_calls++;
  if (!exchange) fill_types(nall);

  const auto device = model->device;
  torch::Tensor edge_index = model->edge_buffer.narrow(0, 0, 2 * nedges).view({2, nedges});
  double *positions = exchange ? model->node_pos.data() : atom->x[0];
  torch::Tensor pos = torch::from_blob(positions, {nnodes, 3}, torch::kFloat64)
                          .to(device, model->dtype, false, true);
  torch::Tensor atom_types = torch::from_blob(model->types.data(), {nnodes}, torch::kInt64);
  edge_index = edge_index.to(device);
  atom_types = atom_types.to(device);

  torch::Tensor atom_energy, forces;
  try {
    if (model->format == MLFFModel::AOTI) {
      // rebuilt only when the atom counts change (after a neighbour-list rebuild at most)
      const int mask_rows = exchange ? nlocal : nall;
      if (!model->local_mask.defined() || model->local_mask.size(0) != mask_rows || model->mask_nlocal != nlocal) {
        model->local_mask = torch::zeros({mask_rows}, torch::TensorOptions().dtype(model->dtype).device(device));
        model->local_mask.narrow(0, 0, nlocal).fill_(1.0);
        model->mask_nlocal = nlocal;
      }
      auto out = model->aoti->run({pos, edge_index, atom_types, model->local_mask});
      atom_energy = out.at(0);
      forces = out.at(1);
    } else {
      pos.requires_grad_(true);
      atom_energy = model->module.forward({pos, edge_index, atom_types, (int64_t) nlocal}).toTensor();
    }
  } catch (const std::exception &e) {
    error->one(FLERR, "Pair style mlff: model {} failed on step {}: {}", model->filename,
               update->ntimestep, first_line(e.what()));
  }
  // exchange-layout models may leave out the energies of ghost atoms
  atom_energy = atom_energy.reshape({-1});
  if (atom_energy.size(0) != nnodes && !(exchange && atom_energy.size(0) == nlocal))
    error->one(FLERR, "Pair style mlff: model {} returned {} atom energies for {} atoms",
               model->filename, atom_energy.size(0), exchange ? nlocal : nall);

  torch::Tensor energy_local = atom_energy.narrow(0, 0, nlocal).sum();
  if (model->format == MLFFModel::TORCHSCRIPT) {
    try {
      // allow_unused: a configuration without edges leaves the energy independent of positions
      auto grad = torch::autograd::grad({energy_local}, {pos}, {}, false, false, true)[0];
      forces = grad.defined() ? -grad : torch::zeros_like(pos);
    } catch (const std::exception &e) {
      error->one(FLERR, "Pair style mlff: forces of model {} failed on step {}: {}",
                 model->filename, update->ntimestep, first_line(e.what()));
    }
  }

  accumulate(energy_local, atom_energy, forces, nnodes, exchange ? model->atom_of_node.data() : nullptr);
  if (vflag_fdotr) virial_fdotr_compute();
}

/* ----------------------------------------------------------------------
   local layout: nodes = local atoms, periodic images as cell shifts; model virial
------------------------------------------------------------------------- */

void PairMLFF::compute_local()
{
  const int nlocal = atom->nlocal;
  const int64_t nedges = build_local_edges();
  fill_types(nlocal);

  const auto device = model->device;
  const auto real = torch::TensorOptions().dtype(model->dtype);
  const double *h = domain->h;
  // rows are the box vectors a = (xprd, 0, 0), b = (xy, yprd, 0), c = (xz, yz, zprd)
  double cell_rows[9] = {h[0], 0.0, 0.0, h[5], h[1], 0.0, h[4], h[3], h[2]};

  torch::Tensor edge_index = model->edge_buffer.narrow(0, 0, 2 * nedges).view({2, nedges});
  std::vector<torch::Tensor> inputs = {
      torch::from_blob(atom->x[0], {nlocal, 3}, torch::kFloat64).to(device, model->dtype),
      edge_index.to(device),
      torch::from_blob(model->types.data(), {nlocal}, torch::kInt64).to(device),
      torch::from_blob(cell_rows, {1, 3, 3}, torch::kFloat64).to(device, model->dtype),
      torch::from_blob(model->cell_shifts.data(), {nedges, 3}, torch::kFloat64)
          .to(device, model->dtype)};

  std::vector<torch::Tensor> out;
  try {
    out = model->aoti->boxed_run(std::move(inputs));
  } catch (const std::exception &e) {
    error->one(FLERR, "Pair style mlff: model {} failed on step {}: {}", model->filename,
               update->ntimestep, first_line(e.what()));
  }
  torch::Tensor atom_energy = out.at(0).reshape({-1});
  accumulate(atom_energy.sum(), atom_energy, out.at(1), nlocal);

  if (vflag_global) {
    auto v = out.at(2).detach().to(torch::kCPU, torch::kFloat64).contiguous();
    const double *w = v.data_ptr<double>();    // [1, 3, 3], LAMMPS's sign: sum r (x) f
    virial[0] += w[0];
    virial[1] += w[4];
    virial[2] += w[8];
    virial[3] += w[1];
    virial[4] += w[2];
    virial[5] += w[5];
  }
}

/* ----------------------------------------------------------------------
   add model forces of nforce nodes (node n is atom n, or atom atom_of_node[n] when given),
   energy and per-atom energies of local atoms
------------------------------------------------------------------------- */

void PairMLFF::accumulate(const torch::Tensor &energy_local, const torch::Tensor &atom_energy,
                          const torch::Tensor &forces_model, int nforce, const int *atom_of_node)
{
  auto forces = forces_model.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  if (forces.numel() != 3 * (int64_t) nforce)
    error->one(FLERR, "Pair style mlff: model {} returned {} force components for {} atoms",
               model->filename, forces.numel(), nforce);
  const double *fmodel = forces.data_ptr<double>();
  const double energy = energy_local.item<double>();
  check_finite(energy, fmodel, nforce);

  double **f = atom->f;
  for (int n = 0; n < nforce; n++) {
    const int i = atom_of_node ? atom_of_node[n] : n;
    f[i][0] += fmodel[3 * n];
    f[i][1] += fmodel[3 * n + 1];
    f[i][2] += fmodel[3 * n + 2];
  }

  if (eflag_global) eng_vdwl += energy;
  if (eflag_atom) {
    auto eatom_model = atom_energy.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    const double *e = eatom_model.data_ptr<double>();
    for (int i = 0; i < atom->nlocal; i++) eatom[i] += e[i];
  }
}

/* ---------------------------------------------------------------------- */

void PairMLFF::fill_types(int n)
{
  auto &types = model->types;
  if ((int) types.size() < n) types.resize(n);
  const int *type = atom->type;
  for (int i = 0; i < n; i++) types[i] = type_map[type[i]];
}

/* ----------------------------------------------------------------------
   grow the edge buffers to hold every listed pair of the first ncenters list entries
------------------------------------------------------------------------- */

void PairMLFF::reserve_edges(int ncenters)
{
  bigint npairs = 0;
  for (int ii = 0; ii < ncenters; ii++) npairs += list->numneigh[list->ilist[ii]];
  if (!model->edge_buffer.defined() || model->edge_buffer.numel() < 2 * npairs)
    model->edge_buffer = torch::empty({2 * (int64_t) (1.2 * npairs) + 2}, torch::kInt64);
  if ((bigint) model->neighbor_scratch.size() < npairs)
    model->neighbor_scratch.resize(1.2 * npairs + 1);
}

/* ----------------------------------------------------------------------
   ghost layout edges (center, neighbor) for every listed pair closer than r_max. The list
   is built with a skin, so this filter runs every step. Local atoms are centers; with a
   depth of more than one layer ghost atoms are centers too, and edges whose center is depth
   or more hops from every local atom are dropped: no message through them reaches a local
   atom within depth layers, so the pruning is exact. The exchange layout asks for depth 1.
------------------------------------------------------------------------- */

int64_t PairMLFF::build_ghost_edges(int depth)
{
  double **x = atom->x;
  const int ncenters = list->inum + (depth > 1 ? list->gnum : 0);
  const double cutsq_model = r_max * r_max;
  reserve_edges(ncenters);
  int64_t *centers = model->edge_buffer.data_ptr<int64_t>();
  int64_t *neighbors = model->neighbor_scratch.data();

  int64_t nedges = 0;
  for (int ii = 0; ii < ncenters; ii++) {
    const int i = list->ilist[ii];
    const int *jlist = list->firstneigh[i];
    const int jnum = list->numneigh[i];
    const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
    for (int jj = 0; jj < jnum; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - xi;
      const double dy = x[j][1] - yi;
      const double dz = x[j][2] - zi;
      if (dx * dx + dy * dy + dz * dz < cutsq_model) {
        centers[nedges] = i;
        neighbors[nedges] = j;
        nedges++;
      }
    }
  }

  if (depth > 1) {
    auto &hops = model->hops;
    const int nall = atom->nlocal + atom->nghost;
    hops.assign(nall, depth);
    for (int i = 0; i < atom->nlocal; i++) hops[i] = 0;
    for (int level = 1; level < depth; level++)
      for (int64_t e = 0; e < nedges; e++)
        if (hops[centers[e]] == level - 1 && hops[neighbors[e]] > level) hops[neighbors[e]] = level;
    int64_t kept = 0;
    for (int64_t e = 0; e < nedges; e++)
      if (hops[centers[e]] < depth) {
        centers[kept] = centers[e];
        neighbors[kept] = neighbors[e];
        kept++;
      }
    nedges = kept;
  }
  std::memcpy(centers + nedges, neighbors, nedges * sizeof(int64_t));
  return nedges;
}

/* ----------------------------------------------------------------------
   exchange layout nodes: local atoms, then (in LAMMPS order) the ghosts that send an edge,
   i.e. lie within r_max of a local atom. LAMMPS's ghost shell is r_max + skin and may hold
   ghosts of ghosts; neither sends a message, so leaving them out of the model is exact and
   saves the model their node-wise work. Renumbers the edges' neighbors to nodes and gathers
   node positions and types. Returns the number of nodes
------------------------------------------------------------------------- */

int PairMLFF::select_exchange_nodes(int64_t nedges)
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  auto &node_of_atom = model->node_of_atom;
  auto &atom_of_node = model->atom_of_node;
  int64_t *neighbors = model->edge_buffer.data_ptr<int64_t>() + nedges;

  node_of_atom.assign(nall, -1);
  for (int i = 0; i < nlocal; i++) node_of_atom[i] = i;
  for (int64_t e = 0; e < nedges; e++)
    if (neighbors[e] >= nlocal) node_of_atom[neighbors[e]] = 0;    // marked, numbered below
  atom_of_node.resize(nall);
  int nnodes = nlocal;
  for (int i = 0; i < nlocal; i++) atom_of_node[i] = i;
  for (int i = nlocal; i < nall; i++)
    if (node_of_atom[i] == 0) {
      node_of_atom[i] = nnodes;
      atom_of_node[nnodes++] = i;
    }
  for (int64_t e = 0; e < nedges; e++) neighbors[e] = node_of_atom[neighbors[e]];
  exchange_nnodes = nnodes;
  exchange_ghost_nodes += nnodes - nlocal;

  double **x = atom->x;
  const int *type = atom->type;
  model->node_pos.resize(3 * (size_t) nnodes);
  if ((int) model->types.size() < nnodes) model->types.resize(nnodes);
  for (int n = 0; n < nnodes; n++) {
    const int i = atom_of_node[n];
    std::memcpy(&model->node_pos[3 * n], x[i], 3 * sizeof(double));
    model->types[n] = type_map[type[i]];
  }
  return nnodes;
}

/* ----------------------------------------------------------------------
   local layout edges: centers are local atoms, a ghost neighbor becomes its owner plus the
   integer cell shift S with x_ghost = x_owner + S . cell
------------------------------------------------------------------------- */

int64_t PairMLFF::build_local_edges()
{
  double **x = atom->x;
  const tagint *tag = atom->tag;
  const int nlocal = atom->nlocal;
  const double cutsq_model = r_max * r_max;
  const double *h = domain->h;
  reserve_edges(list->inum);
  int64_t *centers = model->edge_buffer.data_ptr<int64_t>();
  int64_t *neighbors = model->neighbor_scratch.data();
  auto &shifts = model->cell_shifts;
  if (shifts.size() < 3 * model->neighbor_scratch.size()) shifts.resize(3 * model->neighbor_scratch.size());

  int64_t nedges = 0;
  for (int ii = 0; ii < list->inum; ii++) {
    const int i = list->ilist[ii];
    const int *jlist = list->firstneigh[i];
    const int jnum = list->numneigh[i];
    for (int jj = 0; jj < jnum; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0];
      const double dy = x[j][1] - x[i][1];
      const double dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz >= cutsq_model) continue;
      const int owner = j < nlocal ? j : atom->map(tag[j]);
      if (owner < 0 || owner >= nlocal)
        error->one(FLERR, "Pair style mlff: atom {} has no local copy on this rank; the "
                          "single-rank model layout needs every atom on one rank", tag[j]);
      // solve x_j - x_owner = s0 a + s1 b + s2 c for the lower-triangular LAMMPS box
      const double ox = x[j][0] - x[owner][0];
      const double oy = x[j][1] - x[owner][1];
      const double oz = x[j][2] - x[owner][2];
      const double s2 = std::round(oz / h[2]);
      const double s1 = std::round((oy - s2 * h[3]) / h[1]);
      const double s0 = std::round((ox - s1 * h[5] - s2 * h[4]) / h[0]);
      centers[nedges] = i;
      neighbors[nedges] = owner;
      shifts[3 * nedges] = s0;
      shifts[3 * nedges + 1] = s1;
      shifts[3 * nedges + 2] = s2;
      nedges++;
    }
  }
  std::memcpy(centers + nedges, neighbors, nedges * sizeof(int64_t));
  return nedges;
}

/* ----------------------------------------------------------------------
   exchange layout: rows are the model's node rows of width values (select_exchange_nodes).
   Each comm pass stages EXCHANGE_COLUMNS of them for every LAMMPS atom: forward, local rows
   go out and ghost nodes read their owners' values back; reverse, every node's gradient goes
   in, ghost rows are summed into their owners (over relays too), local rows read back and
   ghost rows are zeroed (a ghost row's gradient now counts at its owner)
------------------------------------------------------------------------- */

void PairMLFF::exchange_features(double *rows, int64_t nrows, int64_t width, bool reverse)
{
  const int nlocal = atom->nlocal;
  const int64_t nall = nlocal + atom->nghost;
  const int64_t nnodes = exchange_nnodes;
  if (nrows != nnodes)
    throw std::runtime_error(fmt::format("ghost exchange of {} node rows, but this rank's model "
                                         "has {} nodes", nrows, nnodes));
  const double start = platform::walltime();
  const int *atom_of_node = model->atom_of_node.data();
  auto &staging = model->exchange_staging;
  for (int64_t first = 0; first < width; first += EXCHANGE_COLUMNS) {
    const int columns = (int) std::min<int64_t>(EXCHANGE_COLUMNS, width - first);
    const size_t bytes = columns * sizeof(double);
    if ((int64_t) staging.size() < nall * columns) staging.resize(nall * columns);
    exchange_rows = staging.data();
    exchange_columns = columns;
    if (reverse) {
      std::fill(staging.begin(), staging.begin() + nall * columns, 0.0);
      for (int64_t n = 0; n < nnodes; n++)
        std::memcpy(&staging[(int64_t) atom_of_node[n] * columns], rows + n * width + first, bytes);
      comm->reverse_comm(this, columns);
      for (int64_t i = 0; i < nlocal; i++)
        std::memcpy(rows + i * width + first, &staging[i * columns], bytes);
    } else {
      for (int64_t i = 0; i < nlocal; i++)
        std::memcpy(&staging[i * columns], rows + i * width + first, bytes);
      comm->forward_comm(this, columns);
      for (int64_t n = nlocal; n < nnodes; n++)
        std::memcpy(rows + n * width + first, &staging[(int64_t) atom_of_node[n] * columns], bytes);
    }
  }
  if (reverse) std::fill(rows + nlocal * width, rows + nnodes * width, 0.0);
  exchange_rows = nullptr;
  exchange_seconds += platform::walltime() - start;
}

/* ----------------------------------------------------------------------
   exchange layout: a line on the cost of the exchange at the end of each run
------------------------------------------------------------------------- */

void PairMLFF::setup()
{
  exchange_model_calls = exchange_values = exchange_ghost_nodes = 0;
  exchange_seconds = 0.0;
}

void PairMLFF::finish()
{
  if (model->graph != MLFFModel::EXCHANGE || exchange_model_calls == 0) return;
  double seconds_max = 0.0, counts_sum[2] = {0.0, 0.0};
  double counts[2] = {(double) exchange_values, (double) exchange_ghost_nodes};
  MPI_Reduce(&exchange_seconds, &seconds_max, 1, MPI_DOUBLE, MPI_MAX, 0, world);
  MPI_Reduce(counts, counts_sum, 2, MPI_DOUBLE, MPI_SUM, 0, world);
  const double calls = (double) exchange_model_calls;
  if (comm->me == 0)
    utils::logmesg(lmp, "mlff exchange: {} model calls, {:.4g} s in ghost exchange (slowest rank), "
                   "{:.4g} kB of feature rows per call (all ranks, forward + reverse, including periodic "
                   "images a rank sends itself), {:.6g} ghost nodes per call in the model (all ranks)\n",
                   exchange_model_calls, seconds_max, 8.0e-3 * counts_sum[0] / calls, counts_sum[1] / calls);
}

int PairMLFF::pack_forward_comm(int n, int *list, double *buf, int /*pbc_flag*/, int * /*pbc*/)
{
  int m = 0;
  for (int k = 0; k < n; k++) {
    const double *row = exchange_rows + list[k] * exchange_columns;
    for (int c = 0; c < exchange_columns; c++) buf[m++] = row[c];
  }
  exchange_values += m;
  return m;
}

void PairMLFF::unpack_forward_comm(int n, int first, double *buf)
{
  int m = 0;
  for (int i = first; i < first + n; i++) {
    double *row = exchange_rows + i * exchange_columns;
    for (int c = 0; c < exchange_columns; c++) row[c] = buf[m++];
  }
}

int PairMLFF::pack_reverse_comm(int n, int first, double *buf)
{
  int m = 0;
  for (int i = first; i < first + n; i++) {
    const double *row = exchange_rows + i * exchange_columns;
    for (int c = 0; c < exchange_columns; c++) buf[m++] = row[c];
  }
  exchange_values += m;
  return m;
}

void PairMLFF::unpack_reverse_comm(int n, int *list, double *buf)
{
  int m = 0;
  for (int k = 0; k < n; k++) {
    double *row = exchange_rows + list[k] * exchange_columns;
    for (int c = 0; c < exchange_columns; c++) row[c] += buf[m++];
  }
}

/* ---------------------------------------------------------------------- */

void PairMLFF::check_finite(double energy, const double *forces, int n)
{
  int bad = std::isfinite(energy) ? 0 : 1;
  for (int k = 0; k < 3 * n && !bad; k++)
    if (!std::isfinite(forces[k])) bad = 1;
  int anybad = 0;
  MPI_Allreduce(&bad, &anybad, 1, MPI_INT, MPI_MAX, world);
  if (anybad)
    error->all(FLERR,
               "Pair style mlff: model {} gave a non-finite energy or force on step {} (the "
               "simulation has collapsed or the model is broken)",
               model->filename, update->ntimestep);
}

/* ----------------------------------------------------------------------
   pair_style mlff [device cpu|cuda] [threads N]
------------------------------------------------------------------------- */

void PairMLFF::settings(int narg, char **arg)
{
  int iarg = 0;
  while (iarg < narg) {
    if (strcmp(arg[iarg], "device") == 0) {
      if (iarg + 2 > narg) utils::missing_cmd_args(FLERR, "pair_style mlff device", error);
      device_name = arg[iarg + 1];
      if (device_name != "cpu" && device_name != "cuda")
        error->all(FLERR, "Pair style mlff: unknown device {}: use cpu or cuda", device_name);
      iarg += 2;
    } else if (strcmp(arg[iarg], "threads") == 0) {
      if (iarg + 2 > narg) utils::missing_cmd_args(FLERR, "pair_style mlff threads", error);
      nthreads = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (nthreads < 1) error->all(FLERR, "Pair style mlff: threads must be >= 1");
      iarg += 2;
    } else {
      error->all(FLERR, "Unknown pair_style mlff keyword {}: expected device or threads",
                 arg[iarg]);
    }
  }

  if (device_name == "cuda") {
    if (!torch::cuda::is_available())
      error->all(FLERR,
                 "Pair style mlff: device cuda requested but the linked libtorch has no CUDA "
                 "support or no GPU is visible");
    // one GPU per node-local rank, round robin
    MPI_Comm node;
    int node_rank;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &node_rank);
    MPI_Comm_free(&node);
    model->device = torch::Device(torch::kCUDA, node_rank % torch::cuda::device_count());
  } else {
    model->device = torch::Device(torch::kCPU);
  }
  torch::set_num_threads(nthreads);

  // A model call allocates and frees large intermediate buffers. With glibc's defaults
  // they are mmap'ed and returned to the system on every call, and each step pays page
  // faults for them (measured: 192 atoms, 25% of the step). Keep freed memory in the heap.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
}

/* ----------------------------------------------------------------------
   pair_coeff * * model.pt element1 element2 ... (one element per LAMMPS type)
------------------------------------------------------------------------- */

void PairMLFF::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  if (narg < 3 || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "Incorrect pair_coeff for mlff: use pair_coeff * * <model file> <element "
                      "per atom type>");
  if (narg - 3 != atom->ntypes)
    error->all(FLERR,
               "Incorrect pair_coeff for mlff: {} element names given for {} atom types (give "
               "one element per LAMMPS atom type, in type order)",
               narg - 3, atom->ntypes);

  const std::string filename = arg[2];
  if (!platform::file_is_readable(filename))
    error->all(FLERR, "Pair style mlff cannot open model file {}: {}", filename,
               utils::getsyserror());
  model->filename = filename;
  if (utils::strmatch(filename, "\\.pt2$"))
    load_aoti(filename);
  else
    load_torchscript(filename);
  map_types(narg - 3, arg + 3);

  for (int i = 1; i <= atom->ntypes; i++)
    for (int j = i; j <= atom->ntypes; j++) setflag[i][j] = 1;
}

/* ----------------------------------------------------------------------
   TorchScript file: ghost layout, metadata in the archive's mlff_metadata.json
------------------------------------------------------------------------- */

void PairMLFF::load_torchscript(const std::string &filename)
{
  torch::jit::ExtraFilesMap extra{{METADATA_FILE, ""}};
  try {
    model->module = torch::jit::load(filename, model->device, extra);
  } catch (const std::exception &e) {
    error->all(FLERR, "Pair style mlff cannot load model file {} as TorchScript: {}", filename,
               first_line(e.what()));
  }
  model->module.eval();
  model->format = MLFFModel::TORCHSCRIPT;

  if (extra[METADATA_FILE].empty())
    error->all(FLERR,
               "Pair style mlff: model file {} has no {} (the model contract's metadata); "
               "export it with lmpbench (see pair_styles/README.md)",
               filename, METADATA_FILE);

  std::map<std::string, std::string> meta;
  try {
    auto parsed = json::parse(extra[METADATA_FILE]);
    for (const char *key : {"r_max", "num_layers", "contract_version"})
      if (parsed.contains(key)) meta[key] = parsed[key].dump();
    if (parsed.contains("model_dtype")) meta["model_dtype"] = parsed["model_dtype"].get<std::string>();
    meta["graph"] = parsed.contains("graph") ? parsed["graph"].get<std::string>() : "ghost";
    if (parsed.contains("type_names"))
      meta["type_names"] = utils::join_words(parsed["type_names"].get<std::vector<std::string>>(), " ");
  } catch (const std::exception &e) {
    error->all(FLERR, "Pair style mlff: model file {} has invalid metadata: {}", filename,
               first_line(e.what()));
  }
  if (meta["graph"] == "ghost")
    model->graph = MLFFModel::GHOST;
  else if (meta["graph"] == "exchange")
    model->graph = MLFFModel::EXCHANGE;
  else
    error->all(FLERR, "Pair style mlff: model file {} has graph '{}' in its metadata: expected "
               "ghost or exchange", filename, meta["graph"]);
  apply_metadata(meta);
}

/* ----------------------------------------------------------------------
   AOTInductor package: lmpbench's ghost or local layout, or a stock nequip-compile
   pair_nequip file (local layout, no lmpbench keys)
------------------------------------------------------------------------- */

void PairMLFF::load_aoti(const std::string &filename)
{
  std::unordered_map<std::string, std::string> package_meta;
  try {
    package_meta = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(filename, "model");
  } catch (const std::exception &e) {
    error->all(FLERR, "Pair style mlff cannot read model file {} as an AOTInductor package: {}",
               filename, first_line(e.what()));
  }
  std::map<std::string, std::string> meta(package_meta.begin(), package_meta.end());
  auto value = [&](const std::string &key) { return meta.count(key) ? meta[key] : std::string(); };

  const std::string compiled_for = value("AOTI_DEVICE_KEY");
  if (!compiled_for.empty() && compiled_for != device_name)
    error->all(FLERR, "Pair style mlff: model file {} was compiled for device {} but pair_style "
               "mlff runs on {}; deploy it for {} or set 'pair_style mlff device {}'",
               filename, compiled_for, device_name, device_name, compiled_for);
  if (device_name == "cpu") {
    const std::string missing = missing_cpu_features(value("AOTI_CPU_ISA"));
    if (!missing.empty())
      error->all(FLERR, "Pair style mlff: model file {} was compiled for CPU features '{}' and "
                 "this CPU lacks{}; deploy the model on this kind of machine",
                 filename, value("AOTI_CPU_ISA"), missing);
  }
  const std::string torch_version = value("torch_version");
  if (!torch_version.empty() && torch_version.substr(0, torch_version.find('+')) != TORCH_VERSION)
    error->all(FLERR, "Pair style mlff: model file {} was compiled with torch {} but this plugin "
               "links torch {}; deploy it again with this environment's torch",
               filename, torch_version, TORCH_VERSION);

  const bool ours = meta.count("contract_version") > 0;
  const std::string graph = ours ? value("graph") : "local";
  const std::string inputs = value("nequip_aoti_inputs"), outputs = value("nequip_aoti_outputs");
  const bool local_io = inputs == LOCAL_INPUTS && outputs == LOCAL_OUTPUTS;
  const bool ghost_io = inputs == GHOST_INPUTS && outputs == GHOST_OUTPUTS;
  const bool exchange_io = inputs == EXCHANGE_INPUTS && outputs == GHOST_OUTPUTS;
  if (graph == "local" && local_io)
    model->graph = MLFFModel::LOCAL;
  else if (graph == "ghost" && ghost_io)
    model->graph = MLFFModel::GHOST;
  else if (graph == "exchange" && exchange_io)
    model->graph = MLFFModel::EXCHANGE;
  else
    error->all(FLERR, "Pair style mlff: model file {} has inputs '{}' and outputs '{}', which "
               "match no layout this pair style runs (compile nequip models with "
               "'--target pair_nequip' or deploy them with lmpbench)", filename, inputs, outputs);
  if (!ours) {
    meta["contract_version"] = std::to_string(CONTRACT_VERSION);
    meta["num_layers"] = "1";    // the local layout needs no ghost shell beyond r_max
  }

  try {
    const c10::DeviceIndex index = model->device.is_cuda() ? model->device.index() : -1;
    model->aoti = std::make_unique<torch::inductor::AOTIModelPackageLoader>(filename, "model",
                                                                              false, 1, index);
  } catch (const std::exception &e) {
    error->all(FLERR, "Pair style mlff cannot load model file {} (compiled for {}{}): {}",
               filename, compiled_for, value("AOTI_COMPUTE_CAPABILITY").empty() ? "" :
               " compute capability " + value("AOTI_COMPUTE_CAPABILITY"), first_line(e.what()));
  }
  model->format = MLFFModel::AOTI;
  apply_metadata(meta);
}

/* ----------------------------------------------------------------------
   contract metadata common to all formats, as strings
------------------------------------------------------------------------- */

void PairMLFF::apply_metadata(const std::map<std::string, std::string> &meta)
{
  const std::string &filename = model->filename;
  for (const char *key : {"contract_version", "r_max", "num_layers", "model_dtype", "type_names"})
    if (meta.count(key) == 0)
      error->all(FLERR, "Pair style mlff: model file {} has no '{}' in its metadata", filename, key);

  int version = -1;
  try {
    version = std::stoi(meta.at("contract_version"));
    r_max = std::stod(meta.at("r_max"));
    num_layers = std::stoi(meta.at("num_layers"));
  } catch (const std::exception &e) {
    error->all(FLERR, "Pair style mlff: model file {} has invalid metadata: {}", filename, e.what());
  }
  if (version != CONTRACT_VERSION)
    error->all(FLERR,
               "Pair style mlff: model file {} follows model contract version {}, this pair "
               "style reads version {}; re-export the model with this lmpbench",
               filename, version, CONTRACT_VERSION);
  if (!(r_max > 0.0) || num_layers < 1)
    error->all(FLERR, "Pair style mlff: model file {} has r_max = {} and num_layers = {}",
               filename, r_max, num_layers);

  const std::string dtype = meta.at("model_dtype");
  if (dtype == "float64")
    model->dtype = torch::kFloat64;
  else if (dtype == "float32")
    model->dtype = torch::kFloat32;
  else
    error->all(FLERR, "Pair style mlff: model file {} has model_dtype {}: use float32 or float64",
               filename, dtype);
  model_type_names = utils::split_words(meta.at("type_names"));
}

/* ---------------------------------------------------------------------- */

void PairMLFF::map_types(int nelements, char **elements)
{
  type_map.assign(atom->ntypes + 1, -1);
  for (int itype = 1; itype <= nelements; itype++) {
    const std::string element = elements[itype - 1];
    for (std::size_t k = 0; k < model_type_names.size(); k++)
      if (model_type_names[k] == element) type_map[itype] = (long) k;
    if (type_map[itype] < 0)
      error->all(FLERR, "Pair style mlff: element {} (atom type {}) is not in model {}, which has: {}",
                 element, itype, model->filename, utils::join_words(model_type_names, " "));
  }

  if (comm->me == 0) {
    const std::string blas = foreign_blas();
    if (!blas.empty())
      error->warning(FLERR, "Pair style mlff: the model's matrix products go to the BLAS in {} "
                     "instead of torch's (several times slower); start LAMMPS through lmpbench, "
                     "or with LD_PRELOAD=<torch>/lib/libtorch_cpu.so", blas);
    std::string table = fmt::format(
        "mlff: model {} ({} {} layout, {}, r_max = {}, {} layer(s), device {}, {} thread(s))\n"
        "  LAMMPS type   element   model type\n",
        model->filename, model->format == MLFFModel::AOTI ? "AOTInductor" : "TorchScript",
        model->graph == MLFFModel::LOCAL      ? "local (single-rank)"
        : model->graph == MLFFModel::EXCHANGE ? "exchange (any ranks, per-layer ghost exchange)"
                                              : "ghost (any ranks)",
        model->dtype == torch::kFloat64 ? "float64" : "float32", r_max, num_layers, device_name,
        nthreads);
    for (int itype = 1; itype <= nelements; itype++)
      table += fmt::format("  {:>11}   {:>7}   {:>10}\n", itype, elements[itype - 1], type_map[itype]);
    utils::logmesg(lmp, table);
  }
}

/* ---------------------------------------------------------------------- */

void PairMLFF::init_style()
{
  if (force->newton_pair == 0)
    error->all(FLERR,
               "Pair style mlff requires newton pair on (forces on ghost atoms are summed back "
               "to their owners): use 'newton on'");

  if (model->graph == MLFFModel::LOCAL) {
    if (comm->nprocs > 1)
      error->all(FLERR,
                 "Pair style mlff: model file {} uses the single-rank local layout and cannot "
                 "run on {} MPI ranks; deploy it for several ranks with 'lmpbench deploy "
                 "--target aoti-ghost' (or torchscript-ghost)",
                 model->filename, comm->nprocs);
    if (atom->map_style == Atom::MAP_NONE)
      error->all(FLERR, "Pair style mlff with a local-layout model requires an atom map: "
                        "add 'atom_modify map array' before the box is created");
    no_virial_fdotr_compute = 1;    // the model returns the virial itself
    neighbor->add_request(this, NeighConst::REQ_FULL);
    return;
  }

  no_virial_fdotr_compute = 0;
  if (model->graph == MLFFModel::EXCHANGE) {
    // ghosts within r_max + skin (LAMMPS's default shell) suffice: features of deeper
    // layers come from the ghosts' owners
    comm_forward = comm_reverse = EXCHANGE_COLUMNS;
    neighbor->add_request(this, NeighConst::REQ_FULL);
    return;
  }
  int flags = NeighConst::REQ_FULL;
  if (num_layers > 1) flags |= NeighConst::REQ_GHOST;
  neighbor->add_request(this, flags);

  // ghost atoms reach num_layers * r_max so every message that reaches a local atom is built
  // from complete neighbourhoods
  const double cutghost_needed = num_layers * r_max + neighbor->skin;
  if (comm->cutghostuser < cutghost_needed) comm->cutghostuser = cutghost_needed;
}

/* ---------------------------------------------------------------------- */

double PairMLFF::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "All pair coeffs are not set (use pair_coeff * * ...)");
  return r_max;
}

/* ---------------------------------------------------------------------- */

void PairMLFF::allocate()
{
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  for (int i = 1; i < n; i++)
    for (int j = i; j < n; j++) setflag[i][j] = 0;
  memory->create(cutsq, n, n, "pair:cutsq");
}

/* ---------------------------------------------------------------------- */

double PairMLFF::memory_usage()
{
  double bytes = Pair::memory_usage();
  if (model->edge_buffer.defined()) bytes += (double) model->edge_buffer.nbytes();
  bytes += (double) sizeof(int64_t) * (model->neighbor_scratch.capacity() + model->types.capacity());
  bytes += (double) sizeof(int) * model->hops.capacity();
  bytes += (double) sizeof(double) * model->cell_shifts.capacity();
  return bytes;
}
