"""Alembic's migration environment of the lineage database (docs/contract.md, "Tables"): run by
`core/lineage/schema.py`, shipped inside the package so every wheel and image can upgrade."""
