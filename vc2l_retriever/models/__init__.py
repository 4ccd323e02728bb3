"""Models shipped inside the package, one folder each (a sentence-transformers folder), loaded by name."""
