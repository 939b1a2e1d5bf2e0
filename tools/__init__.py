"""Developer tools (not shipped in the wheel or the collection)."""
