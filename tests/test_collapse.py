"""The in-run energy band of lmpbench.collapse, with LAMMPS replaced by the values it would report."""

import pytest

from lmpbench.collapse import BOLTZMANN_EV_K, ENERGY_BAND_KT, CollapseWatch


class FakeLammps:
    """get_thermo('pe') from a list; a file-style variable reads its file's first line, as
    LAMMPS does on rank 0."""

    def __init__(self, pe_values, verdict_file=None):
        self.pe_values, self.files = list(pe_values), {}

    def get_thermo(self, name):
        assert name == "pe"
        return self.pe_values.pop(0)

    def command(self, text):
        words = text.split()
        if words[2] == "file":
            self.files[words[1]] = open(words[3].strip('"')).readline()

    def extract_variable(self, name):
        return self.files[name]


def test_energy_band_is_ten_kT_per_atom_around_the_first_check(tmp_path):
    natoms, temperature = 100, 300.0
    band = ENERGY_BAND_KT * BOLTZMANN_EV_K * temperature  # eV/atom
    inside, outside = 0.99 * band * natoms, 1.01 * band * natoms
    lmp = FakeLammps([-50.0, -50.0 + inside, -50.0 - inside, -50.0 - outside], tmp_path / "verdict")
    watch = CollapseWatch(tmp_path / "no.dump", True, ["O", "H"], natoms, temperature)
    assert watch.check(lmp, 100) is None and watch.energy_reference == pytest.approx(-0.5)
    assert watch.check(lmp, 200) is None
    assert watch.check(lmp, 300) is None
    step, reason = watch.check(lmp, 400)
    assert step == 400 and "left the band -0.5000" in reason and f"± {band:.4f} eV/atom" in reason
    # a resumed run keeps the reference it recorded, not the energy at its first new check
    resumed = CollapseWatch(tmp_path / "no.dump", True, ["O", "H"], natoms, temperature,
                            resumed_at=300, energy_reference=watch.record()["energy_reference_eV_atom"])
    assert resumed.check(FakeLammps([-50.0 + outside], tmp_path / "verdict"), 500)[0] == 500
