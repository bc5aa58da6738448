"""In-run collapse criteria that need more than LAMMPS's own thermo: a broken structure, an
energy that leaves its band and, with a reference, the benchmark's RDF windows. ``lmpbench
run`` asks after every chunk.

- Structure: ``analysis.geometry.StructuralStability`` (the same criterion ``analyze``
  reports) on every frame saved since the last check, read back from ``traj.dump`` by rank 0;
  the topology and the close-contact floors come from the dump's first frame (step 0). So the
  run stops at the first saved frame that ``analyze`` calls broken, and records that frame's
  step.
- Energy: the potential energy per atom at a check may differ from its value at the first
  check (the end of the first chunk) by at most ``ENERGY_BAND_KT`` x kB T; a collapsing
  system releases far more (a water model fusing atoms: about 0.5 eV/atom, against
  10 kB T = 0.26 eV at 300 K, while thermal fluctuations of the mean are far below kB T).
- RDF windows (with ``lmpbench run --reference``): ``analysis.run_metrics.RDFWindows`` on the
  saved frames, so the run stops at the first window whose error exceeds the benchmark's
  threshold, recorded at that window's first frame: where ``analyze`` ends the stable part.

The verdict is rank 0's (it alone reads the files) and reaches every rank through
``engine.broadcast_from_root``: all ranks then take the same branch.
"""

from __future__ import annotations

import math
from pathlib import Path

from lmpbench.analysis.geometry import StructuralStability

ENERGY_BAND_KT = 10.0
BOLTZMANN_EV_K = 8.617333262e-5


class CollapseWatch:
    """``check(lmp)`` after each chunk: None, or (step of the first broken frame, reason)."""

    def __init__(self, dump: Path, is_root: bool, elements: list[str], natoms: int,
                 temperature_K: float, resumed_at: int = 0, energy_reference: float | None = None,
                 structure: bool = True, windows=None, fixed_bonds: bool = True):
        """``structure``: the structural and energy checks (lmpbench's); ``windows``: an
        ``analysis.run_metrics.RDFWindows`` for the benchmark's RDF-window check (rank 0)."""
        self.dump, self.is_root, self.natoms = dump, is_root, natoms
        self.elements = list(elements)  # of atom types 1, 2, ...
        self.check_structure, self.windows, self.fixed_bonds = structure, windows, fixed_bonds
        self.band_eV_atom = ENERGY_BAND_KT * BOLTZMANN_EV_K * temperature_K
        self.energy_reference = energy_reference  # eV/atom, set at the first check unless resumed
        self.resumed_at = resumed_at  # frames up to this step were checked before a restart
        self.structure: StructuralStability | None = None
        self.offset = 0  # bytes of traj.dump already read

    def record(self) -> dict:
        """For run.json: the criteria as stated, and the energy reference for a resume."""
        record = {}
        if self.check_structure:
            record.update(energy_reference_eV_atom=self.energy_reference, energy_band_eV_atom=self.band_eV_atom,
                          energy_band=f"{ENERGY_BAND_KT:g} kB T per atom around the value at the first check",
                          structure="lmpbench.analysis.geometry.StructuralStability on every saved frame")
        if self.windows is not None:
            record["rdf_windows"] = (f"{self.windows.window} frames a window, error above "
                                     f"{self.windows.settings.threshold:g} against the reference")
        return record

    def check(self, lmp, step: int) -> tuple[int, str] | None:
        from lmpbench.engine import broadcast_from_root

        verdict = broadcast_from_root(lmp, self.is_root, self._scan() if self.is_root else "")
        if verdict:
            frame_step, _, reason = verdict.partition(" ")
            return int(frame_step), reason
        return self._energy(lmp, step) if self.check_structure else None

    def _scan(self) -> str:
        """Rank 0: the first newly saved frame that is broken, as 'STEP reason', or ''."""
        from lmpbench.analysis.trajectory import TrajectoryReader

        if not self.dump.is_file():
            return ""
        reader = TrajectoryReader(self.dump, finished=False, byte_offset=self.offset)
        for frame in reader:
            if self.windows is not None:  # every frame, from the first: windows are counted from it
                error = self.windows.add(frame)
                if error is not None and error > self.windows.settings.threshold and frame.step > self.resumed_at:
                    return (f"{self.windows.first.step} RDF window {self.windows.first.step}-{frame.step} error "
                            f"{error:.3g} > {self.windows.settings.threshold:g} (the benchmark's criterion)")
            if not self.check_structure:
                continue
            if self.structure is None:
                self.structure = StructuralStability(self.elements, self.fixed_bonds)
                self.structure.accumulate(frame)  # the first frame: topology and floors
                continue
            if frame.step <= self.resumed_at:
                continue
            self.structure.accumulate(frame)
            if self.structure.first_broken_step is not None:
                return f"{self.structure.first_broken_step} structure broke: {self.structure.reason}"
        self.offset = reader.byte_end
        return ""

    def _energy(self, lmp, step: int) -> tuple[int, str] | None:
        try:
            pe = lmp.get_thermo("pe") / self.natoms
        except Exception:  # a run stopped by a signal ends on a step without energy tally
            return None
        if not math.isfinite(pe):
            return None  # the thermo check reports non-finite energies
        if self.energy_reference is None:
            self.energy_reference = pe
            return None
        if abs(pe - self.energy_reference) > self.band_eV_atom:
            return step, (f"potential energy {pe:.4f} eV/atom left the band {self.energy_reference:.4f} "
                          f"± {self.band_eV_atom:.4f} eV/atom ({ENERGY_BAND_KT:g} kB T)")
        return None
