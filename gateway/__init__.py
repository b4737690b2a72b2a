"""A Panora-compatible accounting gateway driven by declarative mapping files."""
