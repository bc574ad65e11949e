"""Format parsers behind ingestion.parsing (the public entry point)."""
