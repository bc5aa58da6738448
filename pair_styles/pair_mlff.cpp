/* ----------------------------------------------------------------------
   lmpbench: pair style mlff.

   Runs a TorchScript model that maps (positions, edges, model types, nlocal) to per-atom
   energies. Every local and ghost atom is a graph node and every listed pair within r_max
   an edge; the energy is the sum over local atoms only and forces are -dE/dx on all nodes,
   so with newton pair on LAMMPS sums ghost forces back to their owners. With the ghost
   cutoff raised to num_layers * r_max + skin this is exact for message-passing models on
   any number of MPI ranks. The virial comes from fdotr over local and ghost atoms.
------------------------------------------------------------------------- */

#include "pair_mlff.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "platform.h"
#include "update.h"
#include "utils.h"

#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <mpi.h>

using namespace LAMMPS_NS;

static constexpr char METADATA_FILE[] = "mlff_metadata.json";

namespace LAMMPS_NS {
struct MLFFModel {
  torch::jit::Module module;
  torch::Device device{torch::kCPU};
  torch::Dtype dtype{torch::kFloat64};
  std::string filename;
  // per-step buffers, reused; they grow past their high-water mark only
  torch::Tensor edge_buffer;                // int64: centers of E edges, then their neighbors
  std::vector<int64_t> neighbor_scratch;    // neighbors while E is still unknown
  std::vector<int64_t> types;
};
}    // namespace LAMMPS_NS

// first line of a torch error: the rest is a C++ backtrace a user cannot act on
static std::string first_line(const char *what)
{
  std::string msg(what);
  auto eol = msg.find('\n');
  return eol == std::string::npos ? msg : msg.substr(0, eol);
}

/* ---------------------------------------------------------------------- */

PairMLFF::PairMLFF(LAMMPS *lmp) :
    Pair(lmp), model(new MLFFModel), device_name("cpu"), nthreads(1), r_max(0.0), num_layers(1)
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

  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int nedges = build_edges();

  auto &types = model->types;
  if ((int) types.size() < nall) types.resize(nall);
  const int *type = atom->type;
  for (int i = 0; i < nall; i++) types[i] = type_map[type[i]];

  const auto cpu_long = torch::TensorOptions().dtype(torch::kInt64);
  torch::Tensor edge_index = model->edge_buffer.narrow(0, 0, 2 * (int64_t) nedges).view({2, nedges});

  torch::Tensor pos = torch::from_blob(atom->x[0], {nall, 3}, torch::kFloat64)
                          .to(model->device, model->dtype, false, true)
                          .requires_grad_(true);
  torch::Tensor atom_types = torch::from_blob(types.data(), {nall}, cpu_long).to(model->device);
  edge_index = edge_index.to(model->device);

  torch::Tensor energy_local, forces, atom_energy;
  try {
    atom_energy = model->module.forward({pos, edge_index, atom_types, (int64_t) nlocal})
                      .toTensor()
                      .reshape({-1});
  } catch (const std::exception &e) {
    error->one(FLERR, "Pair style mlff: model {} failed on step {}: {}", model->filename,
               update->ntimestep, first_line(e.what()));
  }
  if (atom_energy.size(0) != nall)
    error->one(FLERR, "Pair style mlff: model {} returned {} atom energies for {} atoms",
               model->filename, atom_energy.size(0), nall);

  try {
    energy_local = atom_energy.narrow(0, 0, nlocal).sum();
    // allow_unused: a configuration without edges leaves the energy independent of positions
    auto grad = torch::autograd::grad({energy_local}, {pos}, {}, false, false, true)[0];
    forces = grad.defined() ? -grad : torch::zeros_like(pos);
  } catch (const std::exception &e) {
    error->one(FLERR, "Pair style mlff: forces of model {} failed on step {}: {}",
               model->filename, update->ntimestep, first_line(e.what()));
  }

  forces = forces.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const double *fmodel = forces.data_ptr<double>();
  const double energy = energy_local.item<double>();
  check_finite(energy, fmodel, nall);

  double **f = atom->f;
  for (int i = 0; i < nall; i++) {
    f[i][0] += fmodel[3 * i];
    f[i][1] += fmodel[3 * i + 1];
    f[i][2] += fmodel[3 * i + 2];
  }

  if (eflag_global) eng_vdwl += energy;
  if (eflag_atom) {
    auto eatom_model = atom_energy.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    const double *e = eatom_model.data_ptr<double>();
    for (int i = 0; i < nlocal; i++) eatom[i] += e[i];
  }
  if (vflag_fdotr) virial_fdotr_compute();
}

/* ----------------------------------------------------------------------
   edges (center, neighbor) for every listed pair closer than r_max; the list is built with
   a skin, so this filter runs every step. Local atoms are centers; with more than one layer
   ghost atoms are centers too, so messages reaching local atoms are complete.
------------------------------------------------------------------------- */

int PairMLFF::build_edges()
{
  double **x = atom->x;
  const int ncenters = list->inum + (num_layers > 1 ? list->gnum : 0);
  const double cutsq_model = r_max * r_max;

  bigint npairs = 0;
  for (int ii = 0; ii < ncenters; ii++) npairs += list->numneigh[list->ilist[ii]];
  if (!model->edge_buffer.defined() || model->edge_buffer.numel() < 2 * npairs)
    model->edge_buffer = torch::empty({2 * (int64_t) (1.2 * npairs) + 2}, torch::kInt64);
  if ((bigint) model->neighbor_scratch.size() < npairs) model->neighbor_scratch.resize(1.2 * npairs + 1);
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
  std::memcpy(centers + nedges, neighbors, nedges * sizeof(int64_t));
  return (int) nedges;
}

/* ---------------------------------------------------------------------- */

void PairMLFF::check_finite(double energy, const double *forces, int nall)
{
  int bad = std::isfinite(energy) ? 0 : 1;
  for (int k = 0; k < 3 * nall && !bad; k++)
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

  load_model(arg[2]);
  map_types(narg - 3, arg + 3);

  for (int i = 1; i <= atom->ntypes; i++)
    for (int j = i; j <= atom->ntypes; j++) setflag[i][j] = 1;
}

/* ---------------------------------------------------------------------- */

void PairMLFF::load_model(const std::string &filename)
{
  if (!platform::file_is_readable(filename))
    error->all(FLERR, "Pair style mlff cannot open model file {}: {}", filename,
               utils::getsyserror());

  torch::jit::ExtraFilesMap extra{{METADATA_FILE, ""}};
  try {
    model->module = torch::jit::load(filename, model->device, extra);
  } catch (const std::exception &e) {
    error->all(FLERR, "Pair style mlff cannot load model file {} as TorchScript: {}", filename,
               first_line(e.what()));
  }
  model->module.eval();
  model->filename = filename;

  if (extra[METADATA_FILE].empty())
    error->all(FLERR,
               "Pair style mlff: model file {} has no {} (the model contract's metadata); "
               "export it with lmpbench (see pair_styles/README.md)",
               filename, METADATA_FILE);

  json meta;
  int version = -1;
  std::string dtype;
  try {
    meta = json::parse(extra[METADATA_FILE]);
    version = meta.at("contract_version").get<int>();
    r_max = meta.at("r_max").get<double>();
    num_layers = meta.at("num_layers").get<int>();
    dtype = meta.at("model_dtype").get<std::string>();
    meta.at("type_names").get<std::vector<std::string>>();
  } catch (const std::exception &e) {
    error->all(FLERR, "Pair style mlff: model file {} has invalid metadata: {}", filename,
               first_line(e.what()));
  }
  if (version != CONTRACT_VERSION)
    error->all(FLERR,
               "Pair style mlff: model file {} follows model contract version {}, this pair "
               "style reads version {}; re-export the model with this lmpbench",
               filename, version, CONTRACT_VERSION);
  if (!(r_max > 0.0) || num_layers < 1)
    error->all(FLERR, "Pair style mlff: model file {} has r_max = {} and num_layers = {}",
               filename, r_max, num_layers);
  if (dtype == "float64")
    model->dtype = torch::kFloat64;
  else if (dtype == "float32")
    model->dtype = torch::kFloat32;
  else
    error->all(FLERR, "Pair style mlff: model file {} has model_dtype {}: use float32 or float64",
               filename, dtype);

  model_type_names = meta.at("type_names").get<std::vector<std::string>>();
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
    std::string table = fmt::format(
        "mlff: model {} (contract v{}, {}, r_max = {}, {} layer(s), device {}, {} thread(s))\n"
        "  LAMMPS type   element   model type\n",
        model->filename, CONTRACT_VERSION, model->dtype == torch::kFloat64 ? "float64" : "float32",
        r_max, num_layers, device_name, nthreads);
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
  return bytes;
}
