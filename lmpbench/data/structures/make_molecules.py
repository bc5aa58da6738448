"""Provenance of the molecule structures shipped here (not run by lmpbench itself).

Each molecule is built from its connectivity (SMILES) with RDKit's ETKDG conformer
generator, seeded, and relaxed with the MMFF94 force field; written as extended XYZ with
heavy atoms first in SMILES order, then hydrogens. Needs RDKit, which lmpbench does not
depend on: `pip install rdkit && python make_molecules.py`.
"""

from rdkit import Chem
from rdkit.Chem import AllChem

MOLECULES = {
    "aspirin": "CC(=O)OC1=CC=CC=C1C(=O)O",
    "salicylic_acid": "OC(=O)C1=CC=CC=C1O",
    "naphthalene": "c1ccc2ccccc2c1",
    # ACE-ALA-NME (L-alanine). 1-based: phi = C2-N4-CA5-C7, psi = N4-CA5-C7-N9
    "alanine_dipeptide": "CC(=O)N[C@@H](C)C(=O)NC",
}

for name, smiles in MOLECULES.items():
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=20251127)
    AllChem.MMFFOptimizeMolecule(mol, maxIters=5000)
    conf = mol.GetConformer()
    lines = [str(mol.GetNumAtoms()),
             f'Properties=species:S:1:pos:R:3 pbc="F F F" comment="{name}: RDKit ETKDG + MMFF94 from SMILES {smiles}"']
    for atom in mol.GetAtoms():
        p = conf.GetAtomPosition(atom.GetIdx())
        lines.append(f"{atom.GetSymbol():2s} {p.x:14.8f} {p.y:14.8f} {p.z:14.8f}")
    with open(f"{name}.xyz", "w") as f:
        f.write("\n".join(lines) + "\n")
    print(name, mol.GetNumAtoms(), "atoms")
