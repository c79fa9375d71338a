//! SHA-224 and base36: upstream's inputs-hash and name-hash formulas.
