/* Plugin entry point: registers pair style mlff with the LAMMPS that loads this file. */

#include "mlff_lammpsplugin.h"
#include "pair_mlff.h"

#include "lammps.h"

using namespace LAMMPS_NS;

static Pair *pair_mlff_creator(LAMMPS *lmp)
{
  return new PairMLFF(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  lammpsplugin_t plugin;

  // The wheel ships no version.h; the headers we compiled against are the host's own, so
  // its version string is the right one to declare.
  plugin.version = ((LAMMPS *) lmp)->version;
  plugin.style = "pair";
  plugin.name = "mlff";
  plugin.info = "mlff: torch force fields through libtorch (lmpbench), model contract v1";
  plugin.author = "lmpbench developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &pair_mlff_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
