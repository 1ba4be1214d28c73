"""The config model (frozen, validated), its tables, loading and reload."""
